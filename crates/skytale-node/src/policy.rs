//! napi glue for channel policies: roles, rules, invites (listing, revoking).

use napi::bindgen_prelude::*;
use napi_derive::napi;
use skytale_core::policy::{Role, Rules};

use crate::client::{run, Client};
use crate::errors::js_error_code;

/// The least role for each kind of change (`'admin'` or `'member'`; default `'admin'`).
#[napi(object)]
pub struct ChannelPolicyRules {
    /// Add members directly (an invite proof admits without this role).
    #[napi(ts_type = "'admin' | 'member'")]
    pub add: Option<String>,
    /// Remove other members (leaving never needs a role).
    #[napi(ts_type = "'admin' | 'member'")]
    pub remove: Option<String>,
    /// Create invites.
    #[napi(ts_type = "'admin' | 'member'")]
    pub invite: Option<String>,
    /// Change roles and rules, revoke others' invites.
    #[napi(ts_type = "'admin' | 'member'")]
    pub policy: Option<String>,
}

/// Options of `createChannel`.
#[napi(object)]
pub struct CreateChannelOptions {
    /// The channel's rules.
    pub policy: Option<ChannelPolicyRules>,
}

/// A member's role.
#[napi(object)]
pub struct RoleEntry {
    /// Identity.
    pub identity: String,
    /// `admin` or `member`.
    #[napi(ts_type = "'admin' | 'member'")]
    pub role: String,
}

/// An invite as the channel policy records it.
#[napi(object)]
pub struct InviteEntry {
    /// Invite id (32 hex characters).
    pub id: String,
    /// Who created it.
    pub created_by: String,
    /// Expiry (unix seconds).
    pub expires_at: f64,
    /// How many distinct identities it admits.
    pub max_uses: u32,
    /// Identities that used it.
    pub used: Vec<String>,
    /// Revoked.
    pub revoked: bool,
}

/// Rules from the JS options (default rules when absent).
pub(crate) fn rules_of(env: &Env, options: Option<CreateChannelOptions>) -> napi::Result<Rules> {
    let mut rules = Rules::default();
    if let Some(p) = options.and_then(|o| o.policy) {
        for (slot, value) in [
            (&mut rules.add, p.add),
            (&mut rules.remove, p.remove),
            (&mut rules.invite, p.invite),
            (&mut rules.policy, p.policy),
        ] {
            if let Some(v) = value {
                *slot = Role::parse(&v).map_err(|e| js_error_code(env, e.code(), &e.to_string()))?;
            }
        }
    }
    Ok(rules)
}

#[napi]
impl Client {
    /// Gives `identity` (a member of `channel`) the role `admin` or `member`, by a commit every
    /// member checks; needs the `policy` role (`SKYTALE_POLICY_DENIED` otherwise).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn set_role<'env>(
        &self,
        env: &'env Env,
        channel: String,
        identity: String,
        #[napi(ts_arg_type = "'admin' | 'member'")] role: String,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        let role = Role::parse(&role).map_err(|e| js_error_code(env, e.code(), &e.to_string()))?;
        let inner = self.inner.clone();
        run(env, async move { inner.set_role(&channel, &identity, role).await }, |()| ())
    }

    /// The roles of `channel`'s members (everyone not listed is a `member`), from the channel
    /// policy every member holds.
    #[napi(ts_return_type = "Promise<RoleEntry[]>")]
    pub fn roles<'env>(&self, env: &'env Env, channel: String) -> napi::Result<PromiseRaw<'env, Vec<RoleEntry>>> {
        let inner = self.inner.clone();
        run(
            env,
            async move {
                let members = inner.agent().members(&channel)?;
                let policy = inner.policy(&channel)?.unwrap_or_default();
                Ok::<_, skytale_client::ClientError>(
                    members
                        .into_iter()
                        .map(|m| RoleEntry { role: policy.role(&m).as_str().to_string(), identity: m })
                        .collect::<Vec<_>>(),
                )
            },
            |v| v,
        )
    }

    /// The invites of `channel` (live, used up and revoked), from its policy.
    #[napi(ts_return_type = "Promise<InviteEntry[]>")]
    pub fn invites<'env>(&self, env: &'env Env, channel: String) -> napi::Result<PromiseRaw<'env, Vec<InviteEntry>>> {
        let inner = self.inner.clone();
        run(
            env,
            async move {
                inner.invites(&channel).map(|list| {
                    list.into_iter()
                        .map(|i| InviteEntry {
                            id: i.id,
                            created_by: i.created_by,
                            expires_at: i.expires_at as f64,
                            max_uses: i.max_uses,
                            used: i.used,
                            revoked: i.revoked,
                        })
                        .collect::<Vec<_>>()
                })
            },
            |v| v,
        )
    }

    /// Revokes an invite of `channel` (its creator or an admin): every member refuses it from
    /// then on, and the relay too.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn revoke_invite<'env>(
        &self,
        env: &'env Env,
        channel: String,
        invite_id: String,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        let inner = self.inner.clone();
        run(env, async move { inner.revoke_invite(&channel, &invite_id).await }, |()| ())
    }
}
