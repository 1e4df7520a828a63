//! SLIM shared-secret authentication of an app to its bridge participant, with a clear
//! refusal: a token that fails verification (wrong secret, expired, malformed) is counted in
//! `skytale_bridge_auth_failures_total` and logged with the app it was meant for, instead of
//! being dropped silently.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use slim_auth::errors::AuthError;
use slim_auth::shared_secret::SharedSecret;
use slim_auth::traits::Verifier;

use crate::metrics::Metrics;

/// A [`SharedSecret`] verifier that reports refusals.
#[derive(Clone)]
pub struct AppVerifier {
    inner: SharedSecret,
    app: Arc<str>,
    metrics: Arc<Metrics>,
}

impl AppVerifier {
    /// Verifies tokens made with `inner`'s secret, for the app `app`.
    pub fn new(inner: SharedSecret, app: &str, metrics: Arc<Metrics>) -> AppVerifier {
        AppVerifier {
            inner,
            app: Arc::from(app),
            metrics,
        }
    }

    fn refused(&self, token: &str, e: &AuthError) {
        Metrics::inc(&self.metrics.auth_failures);
        let claimed = token.split(':').next().unwrap_or_default();
        tracing::warn!(app = %self.app, claimed = %claimed, error = %e,
            "SKYTALE_AUTH_REFUSED: refused a SLIM peer: its identity token failed verification (wrong shared secret?)");
    }
}

impl Verifier for AppVerifier {
    async fn initialize(&mut self) -> Result<(), AuthError> {
        self.inner.initialize().await
    }

    async fn verify(&self, token: impl AsRef<str> + Send) -> Result<(), AuthError> {
        self.try_verify(token)
    }

    fn try_verify(&self, token: impl AsRef<str>) -> Result<(), AuthError> {
        let token = token.as_ref();
        self.inner
            .try_verify(token)
            .inspect_err(|e| self.refused(token, e))
    }

    async fn get_claims<Claims>(&self, token: impl AsRef<str> + Send) -> Result<Claims, AuthError>
    where
        Claims: DeserializeOwned + Send,
    {
        self.try_get_claims(token)
    }

    fn try_get_claims<Claims>(&self, token: impl AsRef<str>) -> Result<Claims, AuthError>
    where
        Claims: DeserializeOwned + Send,
    {
        let token = token.as_ref();
        self.inner
            .try_get_claims(token)
            .inspect_err(|e| self.refused(token, e))
    }
}
