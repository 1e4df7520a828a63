//! Channel control from SLIM.
//!
//! Two ways, both answered with stable `SKYTALE_*` codes:
//! - **Session metadata** (set in the app's `SessionConfig.metadata` when it opens the GROUP
//!   session): `skytale-op` = `create` (create the channel) or `join` with `skytale-token` =
//!   `skt_inv_…`; absent = the identity is (or will be made) a member already. A failure is
//!   published to the session as payload type `skytale.error`, body
//!   `{"code":"SKYTALE_…","message":"…"}`.
//! - **Control messages**: publish a JSON request with payload type `skytale.control` in the
//!   session; the reply has payload type `skytale.control.reply` and echoes `id`:
//!   - `{"op":"invite","id":"1","maxUses":1,"ttlSecs":600}` → `{"id":"1","ok":true,"token":"skt_inv_…"}`
//!   - `{"op":"members"}` → `{"ok":true,"members":["alice","bob"]}`
//!   - `{"op":"add","identity":"bob"}` → `{"ok":true,"epoch":3}`
//!   - `{"op":"create"}` / `{"op":"join","token":"skt_inv_…"}` (for this session's channel)
//!   - `{"op":"leave"}` → `{"ok":true}`
//!   - errors: `{"id":"1","ok":false,"code":"SKYTALE_…","message":"…"}`.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use slim_session::session_controller::SessionController;

use crate::bridge::{Twin, publish};
use crate::metrics::Metrics;

/// Payload type of a control request.
pub const PAYLOAD_CONTROL: &str = "skytale.control";
/// Payload type of a control reply.
pub const PAYLOAD_CONTROL_REPLY: &str = "skytale.control.reply";

/// An error for the app, with a stable code.
#[derive(Debug, Clone)]
pub struct BridgeError {
    /// `SKYTALE_*` code.
    pub code: String,
    /// Human-readable reason.
    pub message: String,
}

impl BridgeError {
    /// A new error.
    pub fn new(code: &str, message: &str) -> BridgeError {
        BridgeError {
            code: code.to_string(),
            message: message.to_string(),
        }
    }
}

impl From<skytale_client::ClientError> for BridgeError {
    fn from(e: skytale_client::ClientError) -> BridgeError {
        BridgeError::new(e.code(), &e.to_string())
    }
}

/// Refuses a channel outside the app's org.
pub fn check_org(twin: &Twin, channel: &str) -> Result<(), BridgeError> {
    let org = skytale_core::channel_org(channel)
        .map_err(|e| BridgeError::new(e.code(), &e.to_string()))?;
    if org != twin.org {
        return Err(BridgeError::new(
            "SKYTALE_FORBIDDEN",
            &format!(
                "channel {channel} is in org {org}; app {} may only use channels of org {}",
                twin.app_name, twin.org
            ),
        ));
    }
    Ok(())
}

/// Runs the operation requested in the session metadata, if any.
pub async fn session_op(
    twin: &Twin,
    channel: &str,
    meta: &HashMap<String, String>,
) -> Result<(), BridgeError> {
    match meta.get("skytale-op").map(String::as_str) {
        None | Some("") => Ok(()),
        Some("create") => create(twin, channel).await,
        Some("join") => {
            let token = meta.get("skytale-token").ok_or_else(|| {
                BridgeError::new(
                    "SKYTALE_INVALID_ARGUMENT",
                    "skytale-op=join needs skytale-token",
                )
            })?;
            join(twin, channel, token).await
        }
        Some(other) => Err(BridgeError::new(
            "SKYTALE_INVALID_ARGUMENT",
            &format!("unknown skytale-op {other:?}"),
        )),
    }
}

async fn create(twin: &Twin, channel: &str) -> Result<(), BridgeError> {
    if twin.client.agent().is_member(channel).unwrap_or(false) {
        return Ok(());
    }
    twin.client
        .create_channel(channel)
        .await
        .map_err(Into::into)
}

async fn join(twin: &Twin, channel: &str, token: &str) -> Result<(), BridgeError> {
    twin.client
        .join_with_token(channel, token, Duration::from_secs(30))
        .await
        .map_err(Into::into)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    op: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    max_uses: Option<u32>,
    #[serde(default)]
    ttl_secs: Option<u64>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    identity: Option<String>,
}

async fn run(twin: &Twin, channel: &str, req: &Request) -> Result<serde_json::Value, BridgeError> {
    let client = &twin.client;
    match req.op.as_str() {
        "invite" => {
            let token = client
                .create_invite(
                    channel,
                    req.max_uses.unwrap_or(1),
                    Duration::from_secs(req.ttl_secs.unwrap_or(3600)),
                )
                .await?;
            Ok(serde_json::json!({ "token": token.as_str() }))
        }
        "members" => {
            let members = client
                .agent()
                .members(channel)
                .map_err(|e| BridgeError::new(e.code(), &e.to_string()))?;
            Ok(serde_json::json!({ "members": members }))
        }
        "add" => {
            let identity = req.identity.as_deref().ok_or_else(|| {
                BridgeError::new("SKYTALE_INVALID_ARGUMENT", "add needs identity")
            })?;
            let out = client.add_member(channel, identity).await?;
            Ok(serde_json::json!({ "epoch": out.epoch }))
        }
        "create" => create(twin, channel).await.map(|_| serde_json::json!({})),
        "join" => {
            let token = req
                .token
                .as_deref()
                .ok_or_else(|| BridgeError::new("SKYTALE_INVALID_ARGUMENT", "join needs token"))?;
            join(twin, channel, token)
                .await
                .map(|_| serde_json::json!({}))
        }
        "leave" => client
            .leave(channel)
            .await
            .map(|_| serde_json::json!({}))
            .map_err(Into::into),
        other => Err(BridgeError::new(
            "SKYTALE_INVALID_ARGUMENT",
            &format!("unknown op {other:?}"),
        )),
    }
}

/// Answers one control request published in `session` (channel `channel`).
pub async fn handle(twin: &Twin, session: &SessionController, channel: &str, body: &[u8]) {
    Metrics::inc(&twin.metrics.control_ops);
    let (id, result) = match serde_json::from_slice::<Request>(body) {
        Ok(req) => (req.id.clone(), run(twin, channel, &req).await),
        Err(e) => (
            None,
            Err(BridgeError::new(
                "SKYTALE_INVALID_ARGUMENT",
                &format!("bad control request: {e}"),
            )),
        ),
    };
    let mut reply = match result {
        Ok(serde_json::Value::Object(map)) => serde_json::Value::Object(map),
        Ok(_) => serde_json::json!({}),
        Err(e) => serde_json::json!({ "ok": false, "code": e.code, "message": e.message }),
    };
    if let Some(obj) = reply.as_object_mut() {
        obj.entry("ok").or_insert(serde_json::Value::Bool(true));
        if let Some(id) = id {
            obj.insert("id".into(), serde_json::Value::String(id));
        }
    }
    match publish(
        session,
        PAYLOAD_CONTROL_REPLY,
        reply.to_string().into_bytes(),
        HashMap::new(),
    )
    .await
    {
        Ok(done) => {
            let _ = tokio::time::timeout(Duration::from_secs(10), done).await;
        }
        Err(e) => tracing::warn!(error = %e, "control reply not published"),
    }
}
