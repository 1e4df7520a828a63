//! The bridge proper: an embedded SLIM data plane, one bridge participant ("twin") per
//! configured SLIM app, and the mapping of SLIM GROUP sessions onto Skytale channels.
//!
//! A SLIM app `org/ns/app` opens a GROUP session whose channel name is the Skytale channel
//! (`org/ns/service`) and invites its twin `org/ns/app-skytale`. The twin, which holds the
//! app's Skytale identity (a [`skytale_client::Client`] over a keystore), then
//! - encrypts every message the app publishes in the session into the channel (MLS, in the
//!   bridge process: the relay sees ciphertext only), in the order SLIM delivers them;
//! - publishes every message of the other members to the session, in relay order, with
//!   `skytale-sender`, `skytale-seq`, `skytale-epoch` and `skytale-channel` metadata, and
//!   acknowledges it in the keystore inbox only once SLIM reports the publish complete, so
//!   what arrives while the app is away (or the bridge is down) is delivered on the next
//!   session;
//! - answers control requests (payload type `skytale.control`, see [`crate::control`]).
//!
//! A SLIM P2P session from the app to a configured peer's name (the twin subscribes those
//! names too) maps to the two-member channel `org/p2p/<hash of the identity pair>`.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use skytale_client::{ChannelEvent, Client, ClientConfig};
use skytale_core::{Agent, AgentOptions, KeystoreSecret, SecretKey32};
use slim_auth::shared_secret::SharedSecret;
use slim_config::component::id::ID;
use slim_config::server::ServerConfig;
use slim_config::tls::server::TlsServerConfig;
use slim_datapath::api::{ProtoMessage, ProtoName, ProtoPublishType, ProtoSessionType};
use slim_service::app::App;
use slim_service::{Service, ServiceConfiguration};
use slim_session::session_controller::SessionController;
use slim_session::{CompletionHandle, Notification};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use crate::auth::AppVerifier;
use crate::config::{AppConfig, Config};
use crate::control::{self, BridgeError};
use crate::metrics::Metrics;

/// Payload type of ordinary messages.
pub const PAYLOAD_MSG: &str = "msg";
/// Payload type of a membership change published to the app.
pub const PAYLOAD_MEMBERS: &str = "skytale.members";
/// Payload type of an error published to the app.
pub const PAYLOAD_ERROR: &str = "skytale.error";
/// How many channel messages may be published to an app and not yet completed.
const IN_FLIGHT: usize = 512;

type TwinApp = App<SharedSecret, AppVerifier>;

/// The running bridge.
pub struct Bridge {
    service: Service,
    listen: String,
    twins: Vec<Arc<Twin>>,
}

/// The bridge side of one configured SLIM app.
pub struct Twin {
    /// The app's SLIM name (`org/ns/app`).
    pub app_name: String,
    /// The app's org (first component): its channels must be in it.
    pub org: String,
    /// The Skytale client of the app's identity.
    pub client: Client,
    slim_app: TwinApp,
    /// The bridge's counters.
    pub metrics: Arc<Metrics>,
    /// P2P peers: SLIM name → Skytale identity.
    pub peers: HashMap<String, String>,
    /// One forwarder (channel → session) per channel.
    forwarders: Mutex<HashMap<String, JoinHandle<()>>>,
}

fn parse_name(s: &str) -> anyhow::Result<ProtoName> {
    ProtoName::parse_name(s).map_err(|e| anyhow::anyhow!("bad SLIM name {s:?}: {e}"))
}

/// `org/ns/service` of a SLIM name.
pub fn name_string(name: &ProtoName) -> String {
    let (a, b, c) = name.str_components();
    format!("{a}/{b}/{c}")
}

impl Bridge {
    /// Opens every identity, connects it to the relay and starts the SLIM data plane.
    pub async fn start(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Bridge> {
        let server = ServerConfig::with_endpoint(&config.listen)
            .with_tls_settings(TlsServerConfig::default().with_insecure(true));
        let mut service_config = ServiceConfiguration::new();
        service_config.node_id = "skytale-bridge".to_string();
        let service_config = service_config.with_dataplane_server(vec![server]);
        let id = ID::new_with_str("slim/skytale-bridge")
            .map_err(|e| anyhow::anyhow!("service id: {e}"))?;
        let service = service_config
            .build_server(id)
            .map_err(|e| anyhow::anyhow!("SLIM service: {e}"))?;

        let api_key = config.api_key()?;
        let mut pending = Vec::new();
        for app in &config.apps {
            let client =
                connect_identity(app, &config.api_url, api_key.clone(), config.relay.clone())
                    .await?;
            let twin_name = parse_name(&app.twin_name())?;
            let secret = app.secret()?;
            let provider = SharedSecret::new(&app.twin_name(), &secret)
                .map_err(|e| anyhow::anyhow!("{}: {e}", app.name))?;
            let verifier = AppVerifier::new(
                SharedSecret::new(&app.twin_name(), &secret)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", app.name))?,
                &app.name,
                metrics.clone(),
            );
            let (slim_app, rx) = service
                .create_app(&twin_name, provider, verifier)
                .map_err(|e| anyhow::anyhow!("SLIM app {}: {e}", app.name))?;
            let org = app.name.split('/').next().unwrap_or_default().to_string();
            let twin = Arc::new(Twin {
                app_name: app.name.clone(),
                org,
                client,
                slim_app,
                metrics: metrics.clone(),
                peers: app
                    .peers
                    .iter()
                    .map(|p| (p.name.clone(), p.identity.clone()))
                    .collect(),
                forwarders: Mutex::new(HashMap::new()),
            });
            pending.push((twin, twin_name, rx));
        }
        service
            .run()
            .await
            .map_err(|e| anyhow::anyhow!("start SLIM data plane on {}: {e}", config.listen))?;
        let mut twins = Vec::new();
        for (twin, twin_name, rx) in pending {
            twin.slim_app
                .subscribe(&twin_name, None)
                .await
                .map_err(|e| anyhow::anyhow!("subscribe {}: {e}", twin.app_name))?;
            // P2P sessions of the app to a configured peer's name reach the twin.
            for peer in twin.peers.keys() {
                twin.slim_app
                    .subscribe(&parse_name(peer)?, None)
                    .await
                    .map_err(|e| anyhow::anyhow!("subscribe {peer}: {e}"))?;
            }
            tokio::spawn(notifications(Arc::downgrade(&twin), rx));
            tracing::info!(app = %twin.app_name, twin = %name_string(&twin_name), identity = %twin.client.agent().identity(), "bridge ready for app");
            twins.push(twin);
        }
        Ok(Bridge {
            service,
            listen: config.listen.clone(),
            twins,
        })
    }

    /// The twins (for tests and introspection).
    pub fn twins(&self) -> &[Arc<Twin>] {
        &self.twins
    }

    /// Stops the data plane and closes every client.
    pub async fn stop(&self) {
        let _ = self.service.stop_server(&self.listen);
        for twin in &self.twins {
            twin.client.close().await;
        }
    }
}

async fn connect_identity(
    app: &AppConfig,
    api_url: &str,
    api_key: Zeroizing<String>,
    relay: Option<String>,
) -> anyhow::Result<Client> {
    let key = app.keystore_key()?;
    let secret =
        KeystoreSecret::Key(SecretKey32::from_slice(&key).map_err(|e| anyhow::anyhow!("{e}"))?);
    let dir = app.keystore_dir.clone();
    let identity = app.identity.clone();
    let agent = tokio::task::spawn_blocking(move || {
        Agent::open(AgentOptions {
            data_dir: &dir,
            identity: &identity,
            secret: &secret,
        })
    })
    .await?
    .map_err(|e| anyhow::anyhow!("open keystore of {}: {} ({})", app.identity, e, e.code()))?;
    let client = Client::connect(Arc::new(agent), ClientConfig::new(api_url, api_key, relay))
        .await
        .map_err(|e| {
            anyhow::anyhow!("connect {} to Skytale: {} ({})", app.identity, e, e.code())
        })?;
    Ok(client)
}

async fn notifications(
    twin: Weak<Twin>,
    mut rx: mpsc::Receiver<Result<Notification, slim_session::SessionError>>,
) {
    while let Some(item) = rx.recv().await {
        let Some(twin) = twin.upgrade() else { return };
        match item {
            Ok(Notification::NewSession(ctx)) => {
                let (session, srx) = ctx.into_parts();
                tokio::spawn(async move {
                    if let Err(e) = run_session(twin, session, srx).await {
                        tracing::warn!(error = %e, "session ended with an error");
                    }
                });
            }
            Ok(Notification::NewMessage(_)) => {}
            Err(e) => tracing::warn!(app = %twin.app_name, error = %e, "SLIM notification error"),
        }
    }
}

/// The two-member channel of a P2P session: `org/p2p/<first 32 hex of sha256(a|b)>` for the
/// sorted pair of identities; created (with the peer added) on first use.
async fn p2p_channel(twin: &Twin, s: &SessionController) -> Result<String, BridgeError> {
    use sha2::Digest;
    let (src, dst) = (name_string(s.source()), name_string(s.dst()));
    tracing::info!(%src, %dst, "P2P session");
    let peer_identity = twin
        .peers
        .get(&src)
        .or_else(|| twin.peers.get(&dst))
        .ok_or_else(|| {
            BridgeError::new(
                "SKYTALE_UNSUPPORTED",
                &format!("no P2P peer configured for {src} / {dst}"),
            )
        })?;
    let me = twin.client.agent().identity().to_string();
    let mut pair = [me.as_str(), peer_identity.as_str()];
    pair.sort();
    let digest = sha2::Sha256::digest(format!("{}|{}", pair[0], pair[1]).as_bytes());
    let channel = format!("{}/p2p/{}", twin.org, &hex::encode(digest)[..32]);
    if !twin.client.agent().is_member(&channel).unwrap_or(false) {
        match twin.client.create_channel(&channel).await {
            Ok(()) => {
                twin.client.add_member(&channel, peer_identity).await?;
            }
            Err(e) if e.code() == "SKYTALE_CHANNEL_EXISTS" => {
                twin.client
                    .wait_for_channel(&channel, Duration::from_secs(30))
                    .await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(channel)
}

/// Publishes `body` with `payload_type` to the session's peer(s).
pub async fn publish(
    session: &SessionController,
    payload_type: &str,
    body: Vec<u8>,
    meta: HashMap<String, String>,
) -> anyhow::Result<CompletionHandle> {
    let dst = session.dst().clone();
    session
        .publish(
            &dst,
            body,
            Some(payload_type.to_string()),
            if meta.is_empty() { None } else { Some(meta) },
        )
        .await
        .map_err(|e| anyhow::anyhow!("SLIM publish: {e}"))
}

/// Publishes an error (`{"code","message"}`, payload type `skytale.error`).
pub async fn publish_error(session: &SessionController, err: &BridgeError) {
    let body = serde_json::json!({ "code": err.code, "message": err.message })
        .to_string()
        .into_bytes();
    if let Ok(done) = publish(session, PAYLOAD_ERROR, body, HashMap::new()).await {
        let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
    }
}

async fn run_session(
    twin: Arc<Twin>,
    session: Weak<SessionController>,
    mut srx: slim_session::AppChannelReceiver,
) -> anyhow::Result<()> {
    let Some(s) = session.upgrade() else {
        return Ok(());
    };
    let kind = s.session_type();
    let meta = s.metadata();
    let channel = if kind == ProtoSessionType::Multicast {
        name_string(s.dst())
    } else {
        match p2p_channel(&twin, &s).await {
            Ok(channel) => channel,
            Err(err) => {
                Metrics::inc(&twin.metrics.refused);
                tracing::warn!(app = %twin.app_name, code = err.code, message = %err.message, "refused P2P session");
                publish_error(&s, &err).await;
                return Ok(());
            }
        }
    };
    tracing::info!(app = %twin.app_name, %channel, ?kind, "new SLIM session");
    if let Err(err) = control::check_org(&twin, &channel) {
        Metrics::inc(&twin.metrics.refused);
        tracing::warn!(app = %twin.app_name, %channel, code = err.code, "refused session");
        publish_error(&s, &err).await;
        let _ = s.close();
        return Ok(());
    }
    if let Err(err) = control::session_op(&twin, &channel, &meta).await {
        Metrics::inc(&twin.metrics.refused);
        tracing::warn!(app = %twin.app_name, %channel, code = err.code, message = %err.message, "session operation failed");
        publish_error(&s, &err).await;
    }
    Metrics::inc(&twin.metrics.sessions);
    drop(s);

    // Channel → session (replacing the forwarder of an earlier session of this channel).
    {
        let mut forwarders = twin.forwarders.lock().await;
        if let Some(old) = forwarders.remove(&channel) {
            old.abort();
        }
        let handle = tokio::spawn(forward_to_app(
            twin.clone(),
            channel.clone(),
            session.clone(),
        ));
        forwarders.insert(channel.clone(), handle);
    }

    // Session → channel, in SLIM delivery order; each send is queued before the next message is read.
    let (done_tx, mut done_rx) = mpsc::channel::<(u64, boxed::BoxedSend)>(IN_FLIGHT);
    let reporter = {
        let twin = twin.clone();
        let session = session.clone();
        tokio::spawn(async move {
            while let Some((_n, fut)) = done_rx.recv().await {
                if let Err(e) = fut.await {
                    tracing::warn!(app = %twin.app_name, code = e.code(), error = %e, "send to channel failed");
                    if let Some(s) = session.upgrade() {
                        publish_error(&s, &BridgeError::new(e.code(), &e.to_string())).await;
                    }
                }
            }
        })
    };
    let mut n = 0u64;
    while let Some(item) = srx.recv().await {
        let msg: ProtoMessage = match item {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "session receive error");
                continue;
            }
        };
        let Some(ProtoPublishType(p)) = msg.message_type.as_ref() else {
            continue;
        };
        let Some(content) = p.msg.as_ref() else {
            continue;
        };
        let Ok(payload) = content.as_application_payload() else {
            continue;
        };
        if payload.payload_type == control::PAYLOAD_CONTROL {
            let Some(s) = session.upgrade() else { break };
            control::handle(&twin, &s, &channel, &payload.blob).await;
            continue;
        }
        match twin.client.send_queued(&channel, &payload.blob) {
            Ok(fut) => {
                n += 1;
                Metrics::inc(&twin.metrics.to_channel);
                if done_tx.send((n, Box::pin(fut))).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(app = %twin.app_name, %channel, code = e.code(), "refused a message");
                if let Some(s) = session.upgrade() {
                    publish_error(&s, &BridgeError::new(e.code(), &e.to_string())).await;
                }
            }
        }
    }
    drop(done_tx);
    let _ = reporter.await;
    tracing::info!(app = %twin.app_name, %channel, sent = n, "SLIM session closed");
    let mut forwarders = twin.forwarders.lock().await;
    if let Some(h) = forwarders.get(&channel)
        && h.is_finished()
    {
        forwarders.remove(&channel);
    }
    Ok(())
}

/// Publishes the channel's inbox to the session, in relay order; acknowledges each event in
/// the keystore once SLIM reports its publish complete.
async fn forward_to_app(twin: Arc<Twin>, channel: String, session: Weak<SessionController>) {
    // Wait until this identity is a member (after a create/join control op, or an Add).
    loop {
        if session.upgrade().is_none() {
            return;
        }
        if twin.client.agent().is_member(&channel).unwrap_or(false) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ack_tx, mut ack_rx) = mpsc::channel::<(u64, Option<CompletionHandle>)>(IN_FLIGHT);
    let acker = {
        let twin = twin.clone();
        let channel = channel.clone();
        tokio::spawn(async move {
            while let Some((seq, done)) = ack_rx.recv().await {
                if let Some(done) = done
                    && let Err(e) = done.await
                {
                    // Not delivered: stop acknowledging; the rest stays in the inbox.
                    tracing::warn!(%channel, seq, error = %e, "publish to app not completed; keeping the rest in the inbox");
                    return;
                }
                // Noted, and written with the next processing transaction or within 20 ms (a
                // crash before that re-delivers the item; the app drops repeats by seq).
                if let Err(e) = twin.client.ack_events_later(&channel, seq) {
                    tracing::warn!(%channel, seq, error = %e, "inbox ack failed");
                    return;
                }
            }
        })
    };
    let identity = twin.client.agent().identity().to_string();
    let mut after = 0u64;
    loop {
        let Some(s) = session.upgrade() else { break };
        let ev = match twin
            .client
            .next_event(&channel, after, Some(Duration::from_millis(500)))
            .await
        {
            Ok(Some(ev)) => ev,
            Ok(None) => {
                if acker.is_finished() {
                    break;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(%channel, error = %e, "inbox read failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let (seq, payload_type, body, mut meta) = match ev {
            ChannelEvent::Message {
                seq,
                sender,
                data,
                epoch,
            } => {
                let mut meta = HashMap::new();
                meta.insert("skytale-sender".to_string(), sender);
                meta.insert("skytale-epoch".to_string(), epoch.to_string());
                (seq, PAYLOAD_MSG, data, meta)
            }
            ChannelEvent::Commit {
                seq,
                sender,
                epoch,
                added,
                removed,
                self_removed,
            } => {
                let body = serde_json::json!({ "by": sender, "epoch": epoch, "added": added, "removed": removed, "selfRemoved": self_removed });
                let mut meta = HashMap::new();
                meta.insert("skytale-sender".to_string(), sender);
                (seq, PAYLOAD_MEMBERS, body.to_string().into_bytes(), meta)
            }
        };
        meta.insert("skytale-seq".to_string(), seq.to_string());
        meta.insert("skytale-channel".to_string(), channel.clone());
        meta.insert("skytale-identity".to_string(), identity.clone());
        match publish(&s, payload_type, body, meta).await {
            Ok(done) => {
                Metrics::inc(&twin.metrics.to_app);
                if ack_tx.send((seq, Some(done))).await.is_err() {
                    break;
                }
                after = seq;
            }
            Err(e) => {
                tracing::warn!(%channel, seq, error = %e, "publish to app failed; will retry on the next session");
                break;
            }
        }
    }
    drop(ack_tx);
    let _ = acker.await;
}

/// Boxed future of a queued send.
mod boxed {
    /// A boxed, sendable future resolving to the relay sequence number of a send.
    pub type BoxedSend =
        std::pin::Pin<Box<dyn std::future::Future<Output = skytale_client::Result<u64>> + Send>>;
}
