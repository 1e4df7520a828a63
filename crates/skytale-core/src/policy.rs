//! Channel policy: roles, rules and the invite registry of a channel, and the check every
//! member runs on every commit.
//!
//! The policy lives in a group-context extension ([`POLICY_EXTENSION_TYPE`]): MLS authenticates
//! it (it is part of the key schedule) and only a commit changes it, so every member holds the
//! same policy in the same epoch. [`check_commit`] is a pure function of the policy before the
//! commit, the policy after it and the facts of the commit; every member evaluates it before
//! merging, so honest members reach the same verdict and a commit that breaks the policy is
//! rejected everywhere (its relay slot stays empty; the next valid commit takes the next one).
//!
//! Rules (defaults: admins add, remove, invite and change the policy; anyone may leave):
//! - Adds need the `add` role, or — per added identity — an admission proof in the commit's
//!   authenticated data: the joiner's signature (made with the invite token's key, see
//!   [`crate::invite`]) over its identity and leaf key, for an invite of the registry that is
//!   live, not revoked, not expired at the commit's relay time, and not used up; the commit
//!   must record the joiner in the invite's `used` list. An admin created that invite, so the
//!   add counts as the admin's decision, whoever commits it.
//! - External joins need such a proof for the epoch they join from (or are a resync of a
//!   current member's own leaf). An identity in an invite's `used` list never uses it again.
//! - Removes need the `remove` role, unless the removed member proposed its own removal.
//! - Roles and rules change only with the `policy` role (a removal may drop the removed
//!   members' roles); invites are registered with the `invite` role (by their creator), revoked
//!   by their creator or a `policy` admin, never un-revoked; `used` only grows, and only with
//!   identities that are members after the commit.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::error::{Error, Result};
use crate::invite::{verify_admission, verify_external_join};

/// Extension type of the policy in the group context (private-use range of RFC 9420).
pub const POLICY_EXTENSION_TYPE: u16 = 0xF5A7;
/// Largest encoded policy accepted.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;
/// Prefix of a commit's authenticated data that carries proofs.
const AAD_PREFIX: &[u8] = b"skytale-aad-v2:";

/// A member's role. `Admin` > `Member`.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A plain member.
    #[default]
    Member,
    /// An administrator.
    Admin,
}

impl Role {
    /// Parses `"admin"` / `"member"`.
    pub fn parse(s: &str) -> Result<Role> {
        match s {
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            _ => Err(Error::InvalidArgument(format!("unknown role '{s}' (admin or member)"))),
        }
    }

    /// `"admin"` / `"member"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }
}

/// The least role needed for each kind of change.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Add members directly (without an invite proof).
    pub add: Role,
    /// Remove other members.
    pub remove: Role,
    /// Create invites.
    pub invite: Role,
    /// Change roles and rules, revoke others' invites.
    pub policy: Role,
}

impl Default for Rules {
    fn default() -> Self {
        Rules { add: Role::Admin, remove: Role::Admin, invite: Role::Admin, policy: Role::Admin }
    }
}

impl Rules {
    /// Rules where every member may add, remove, invite and change the policy.
    pub fn open() -> Rules {
        Rules { add: Role::Member, remove: Role::Member, invite: Role::Member, policy: Role::Member }
    }
}

/// Kinds of change a role may be needed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Add members directly.
    Add,
    /// Remove other members.
    Remove,
    /// Create invites.
    Invite,
    /// Change roles and rules.
    ChangePolicy,
}

/// An invite registered in the channel.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct InviteEntry {
    /// The invite's public key (base64url, 32 bytes).
    pub public_key: String,
    /// Expiry, unix seconds (compared with the relay's timestamp of the joining commit).
    pub expires_at: u64,
    /// How many distinct identities may use it.
    pub max_uses: u32,
    /// Who created it.
    pub created_by: String,
    /// Revoked.
    #[serde(default)]
    pub revoked: bool,
    /// Identities that used it.
    #[serde(default)]
    pub used: Vec<String>,
}

/// The policy of a channel.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct ChannelPolicy {
    /// Roles by identity (absent = member).
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
    /// Rules.
    #[serde(default)]
    pub rules: Rules,
    /// Invites by id (32 hex characters).
    #[serde(default)]
    pub invites: BTreeMap<String, InviteEntry>,
}

impl ChannelPolicy {
    /// The policy of a new channel: `creator` is its first admin.
    pub fn for_creator(creator: &str, rules: Rules) -> ChannelPolicy {
        let mut roles = BTreeMap::new();
        roles.insert(creator.to_string(), Role::Admin);
        ChannelPolicy { roles, rules, invites: BTreeMap::new() }
    }

    /// Encodes the policy (JSON, deterministic field order).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let bytes = serde_json::to_vec(self).map_err(|e| Error::Internal(format!("encode policy: {e}")))?;
        if bytes.len() > MAX_POLICY_BYTES {
            return Err(Error::PolicyDenied("the channel policy would exceed its size limit".into()));
        }
        Ok(bytes)
    }

    /// Decodes a policy; `SKYTALE_INVALID_MESSAGE` when malformed.
    pub fn decode(bytes: &[u8]) -> Result<ChannelPolicy> {
        if bytes.len() > MAX_POLICY_BYTES {
            return Err(Error::InvalidMessage("channel policy too large".into()));
        }
        serde_json::from_slice(bytes).map_err(|e| Error::InvalidMessage(format!("channel policy: {e}")))
    }

    /// The role of `identity`.
    pub fn role(&self, identity: &str) -> Role {
        self.roles.get(identity).copied().unwrap_or_default()
    }

    /// Whether `identity` may do `action` by its role.
    pub fn may(&self, identity: &str, action: Action) -> bool {
        let needed = match action {
            Action::Add => self.rules.add,
            Action::Remove => self.rules.remove,
            Action::Invite => self.rules.invite,
            Action::ChangePolicy => self.rules.policy,
        };
        self.role(identity) >= needed
    }

    /// The invite `id` if `joiner` may use it at `at` (unix seconds); the invite error otherwise.
    pub fn usable_invite(&self, id: &str, joiner: &str, at: u64) -> Result<&InviteEntry> {
        let e = self.invites.get(id).ok_or_else(|| Error::Invite {
            code: "SKYTALE_INVITE_INVALID",
            message: "the invite is not registered in the channel".into(),
        })?;
        if e.revoked {
            return Err(Error::Invite { code: "SKYTALE_INVITE_REVOKED", message: "the invite was revoked".into() });
        }
        if e.expires_at != 0 && at >= e.expires_at {
            return Err(Error::Invite { code: "SKYTALE_INVITE_EXPIRED", message: "the invite has expired".into() });
        }
        if e.used.iter().any(|u| u == joiner) {
            return Err(Error::Invite {
                code: "SKYTALE_INVITE_USED_UP",
                message: format!("'{joiner}' already used this invite"),
            });
        }
        if e.used.len() >= e.max_uses as usize {
            return Err(Error::Invite { code: "SKYTALE_INVITE_USED_UP", message: "the invite is used up".into() });
        }
        Ok(e)
    }
}

/// An external joiner's proof.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ExternalProof {
    /// Invite id (hex).
    pub id: String,
    /// Signature (base64url).
    pub sig: String,
}

/// An admission proof for one added identity.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Invite id (hex).
    pub id: String,
    /// The admitted identity.
    pub who: String,
    /// Its signature (base64url).
    pub sig: String,
}

/// Proofs a commit carries in its authenticated data.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct CommitProofs {
    /// External join proof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalProof>,
    /// Admission proofs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admit: Vec<Admission>,
}

impl CommitProofs {
    /// Encodes as authenticated data (empty when there is nothing to prove).
    pub fn to_aad(&self) -> Result<Vec<u8>> {
        if self.external.is_none() && self.admit.is_empty() {
            return Ok(Vec::new());
        }
        let json = serde_json::to_vec(self).map_err(|e| Error::Internal(format!("encode proofs: {e}")))?;
        Ok([AAD_PREFIX, &json].concat())
    }

    /// Decodes authenticated data; anything else (or nothing) is "no proofs".
    pub fn from_aad(aad: &[u8]) -> CommitProofs {
        aad.strip_prefix(AAD_PREFIX).and_then(|j| serde_json::from_slice(j).ok()).unwrap_or_default()
    }
}

/// Base64url of bytes (keys and signatures in the policy and proofs).
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap_or_default()
}

fn invite_id_bytes(id: &str) -> Option<[u8; 16]> {
    hex::decode(id).ok().and_then(|b| b.try_into().ok())
}

/// What a commit does, as the member checking it sees it (taken from the staged commit).
#[derive(Debug, Clone)]
pub struct CommitFacts<'a> {
    /// Channel name.
    pub channel: &'a str,
    /// The committer's identity (for an external commit: the joiner).
    pub committer: &'a str,
    /// An external commit.
    pub external: bool,
    /// An external commit that only replaces the committer's own existing leaf (resync).
    pub resync: bool,
    /// The epoch the commit was made in.
    pub from_epoch: u64,
    /// The relay's timestamp of the commit (unix seconds): the same for every member.
    pub at: u64,
    /// Added identities with the signature key of their leaf.
    pub added: Vec<(String, Vec<u8>)>,
    /// Removed identities, with whether the removed member proposed its own removal.
    pub removed: Vec<(String, bool)>,
    /// Identities of the members after the commit.
    pub members_after: Vec<String>,
    /// The commit's authenticated data.
    pub aad: &'a [u8],
}

fn denied(why: impl Into<String>) -> Error {
    Error::PolicyDenied(why.into())
}

/// Checks a commit against the channel policy. `old` is the policy before the commit, `new`
/// the one it leads to; `None` = a channel without a policy (created before policies existed:
/// every member may do everything, as before).
pub fn check_commit(old: Option<&ChannelPolicy>, new: Option<&ChannelPolicy>, f: &CommitFacts<'_>) -> Result<()> {
    let Some(old) = old else {
        return Ok(());
    };
    let Some(new) = new else {
        return Err(denied("a commit may not drop the channel policy"));
    };
    let proofs = CommitProofs::from_aad(f.aad);
    if f.external {
        if new != old {
            return Err(denied("an external commit may not change the policy"));
        }
        if f.resync {
            return Ok(());
        }
        let proof = proofs.external.ok_or_else(|| denied(format!("{} joined without an invite proof", f.committer)))?;
        let entry = old.usable_invite(&proof.id, f.committer, f.at)?;
        let id = invite_id_bytes(&proof.id).ok_or_else(|| denied("malformed invite id"))?;
        if !verify_external_join(
            &unb64(&entry.public_key),
            &id,
            f.channel,
            f.committer,
            f.from_epoch,
            &unb64(&proof.sig),
        ) {
            return Err(Error::Invite {
                code: "SKYTALE_INVITE_INVALID",
                message: format!("{}'s invite proof does not verify", f.committer),
            });
        }
        return Ok(());
    }
    let c = f.committer;
    for (who, leaf_key) in &f.added {
        if old.may(c, Action::Add) {
            continue;
        }
        let adm = proofs
            .admit
            .iter()
            .find(|a| &a.who == who)
            .ok_or_else(|| denied(format!("{c} may not add {who} without an invite")))?;
        let entry = old.usable_invite(&adm.id, who, f.at)?;
        let id = invite_id_bytes(&adm.id).ok_or_else(|| denied("malformed invite id"))?;
        if !verify_admission(&unb64(&entry.public_key), &id, f.channel, who, leaf_key, &unb64(&adm.sig)) {
            return Err(Error::Invite {
                code: "SKYTALE_INVITE_INVALID",
                message: format!("the admission proof of {who} does not verify"),
            });
        }
        let recorded = new.invites.get(&adm.id).map(|e| e.used.iter().any(|u| u == who)).unwrap_or(false);
        if !recorded {
            return Err(denied(format!("the admission of {who} is not recorded in its invite")));
        }
    }
    for (who, self_proposed) in &f.removed {
        if !*self_proposed && !old.may(c, Action::Remove) {
            return Err(denied(format!("{c} may not remove {who}")));
        }
        if new.roles.contains_key(who) {
            return Err(denied(format!("the role of removed member {who} must be dropped")));
        }
    }
    check_policy_change(old, new, f)
}

/// The part of [`check_commit`] that compares the policy before and after a member's commit.
fn check_policy_change(old: &ChannelPolicy, new: &ChannelPolicy, f: &CommitFacts<'_>) -> Result<()> {
    let c = f.committer;
    let admin = old.may(c, Action::ChangePolicy);
    if new.rules != old.rules && !admin {
        return Err(denied(format!("{c} may not change the channel rules")));
    }
    if new.roles != old.roles && !admin {
        // Without the policy role, the only allowed role change drops removed members' roles.
        let removed: Vec<&str> = f.removed.iter().map(|(w, _)| w.as_str()).collect();
        let mut expected = old.roles.clone();
        expected.retain(|k, _| !removed.contains(&k.as_str()));
        if new.roles != expected {
            return Err(denied(format!("{c} may not change roles")));
        }
    }
    for (id, e) in &new.invites {
        match old.invites.get(id) {
            None => {
                if !old.may(c, Action::Invite) {
                    return Err(denied(format!("{c} may not create invites")));
                }
                if e.created_by != c || e.revoked || !e.used.is_empty() || invite_id_bytes(id).is_none() {
                    return Err(denied("a new invite must be fresh and name its creator"));
                }
                if unb64(&e.public_key).len() != 32 || e.max_uses == 0 {
                    return Err(denied("a new invite needs a public key and max uses"));
                }
            }
            Some(o) => {
                if (&o.public_key, o.expires_at, o.max_uses, &o.created_by)
                    != (&e.public_key, e.expires_at, e.max_uses, &e.created_by)
                {
                    return Err(denied("an invite's terms cannot change"));
                }
                if o.revoked && !e.revoked {
                    return Err(denied("a revoked invite stays revoked"));
                }
                if !o.revoked && e.revoked && !(admin || o.created_by == c) {
                    return Err(denied(format!("{c} may not revoke this invite")));
                }
                if e.used.len() < o.used.len() || e.used[..o.used.len()] != o.used[..] {
                    return Err(denied("an invite's use list only grows"));
                }
                for u in &e.used[o.used.len()..] {
                    if !f.members_after.contains(u) || o.used.contains(u) {
                        return Err(denied(format!("{u} cannot be recorded as a use of this invite")));
                    }
                }
            }
        }
    }
    for (id, o) in &old.invites {
        if !new.invites.contains_key(id) {
            let expired = o.expires_at != 0 && f.at >= o.expires_at;
            if !(admin || expired || o.created_by == c) {
                return Err(denied(format!("{c} may not delete this invite")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invite::InviteToken;

    fn facts<'a>(committer: &'a str, aad: &'a [u8]) -> CommitFacts<'a> {
        CommitFacts {
            channel: "acme/t/c",
            committer,
            external: false,
            resync: false,
            from_epoch: 3,
            at: 1_000,
            added: vec![],
            removed: vec![],
            members_after: vec!["alice".into(), "bob".into()],
            aad,
        }
    }

    fn with_invite(p: &ChannelPolicy, t: &InviteToken, by: &str, max: u32) -> ChannelPolicy {
        let mut n = p.clone();
        n.invites.insert(
            t.id_hex(),
            InviteEntry {
                public_key: b64(&t.public_key()),
                expires_at: 2_000,
                max_uses: max,
                created_by: by.into(),
                revoked: false,
                used: vec![],
            },
        );
        n
    }

    #[test]
    fn roles_gate_adds_removes_and_policy_changes() {
        let p = ChannelPolicy::for_creator("alice", Rules::default());
        let mut f = facts("bob", b"");
        f.added = vec![("carol".into(), vec![1; 32])];
        assert_eq!(check_commit(Some(&p), Some(&p), &f).unwrap_err().code(), "SKYTALE_POLICY_DENIED");
        let mut f = facts("alice", b"");
        f.added = vec![("carol".into(), vec![1; 32])];
        check_commit(Some(&p), Some(&p), &f).unwrap();
        let mut f = facts("bob", b"");
        f.removed = vec![("alice".into(), false)];
        assert!(check_commit(Some(&p), Some(&p), &f).is_err());
        // Leaving: bob commits alice's own removal proposal; alice's role must go.
        let mut after = p.clone();
        after.roles.remove("alice");
        f.removed = vec![("alice".into(), true)];
        assert!(check_commit(Some(&p), Some(&p), &f).is_err(), "role of a removed admin kept");
        check_commit(Some(&p), Some(&after), &f).unwrap();
        let mut promoted = p.clone();
        promoted.roles.insert("bob".into(), Role::Admin);
        assert!(check_commit(Some(&p), Some(&promoted), &facts("bob", b"")).is_err());
        check_commit(Some(&p), Some(&promoted), &facts("alice", b"")).unwrap();
        assert!(check_commit(Some(&p), None, &facts("alice", b"")).is_err());
        check_commit(None, None, &facts("bob", b"")).unwrap();
    }

    #[test]
    fn invites_admit_and_external_joins_need_a_registered_live_invite() {
        let p = ChannelPolicy::for_creator("alice", Rules::default());
        let t = InviteToken::generate("acme/t/c", "");
        assert!(check_commit(Some(&p), Some(&with_invite(&p, &t, "bob", 1)), &facts("bob", b"")).is_err());
        let reg = with_invite(&p, &t, "alice", 1);
        check_commit(Some(&p), Some(&reg), &facts("alice", b"")).unwrap();
        // Bob (no add role) admits carol with her proof, recording the use.
        let sig = t.sign_admission("carol", &[5; 32]);
        let proofs = CommitProofs {
            external: None,
            admit: vec![Admission { id: t.id_hex(), who: "carol".into(), sig: b64(&sig) }],
        };
        let aad = proofs.to_aad().unwrap();
        let mut used = reg.clone();
        used.invites.get_mut(&t.id_hex()).unwrap().used.push("carol".into());
        let mut f = facts("bob", &aad);
        f.added = vec![("carol".into(), vec![5; 32])];
        f.members_after.push("carol".into());
        check_commit(Some(&reg), Some(&used), &f).unwrap();
        assert!(check_commit(Some(&reg), Some(&reg), &f).is_err(), "use not recorded");
        f.added = vec![("carol".into(), vec![6; 32])];
        assert!(check_commit(Some(&reg), Some(&used), &f).is_err(), "proof for another leaf");
        // Used up, then an external join by someone else fails; by carol again too.
        let x = CommitProofs {
            external: Some(ExternalProof { id: t.id_hex(), sig: b64(&t.sign_external_join("dave", 3)) }),
            admit: vec![],
        }
        .to_aad()
        .unwrap();
        let mut f = facts("dave", &x);
        f.external = true;
        assert_eq!(check_commit(Some(&used), Some(&used), &f).unwrap_err().code(), "SKYTALE_INVITE_USED_UP");
        check_commit(Some(&reg), Some(&reg), &f).unwrap();
        f.at = 2_000;
        assert_eq!(check_commit(Some(&reg), Some(&reg), &f).unwrap_err().code(), "SKYTALE_INVITE_EXPIRED");
        f.at = 1_000;
        f.from_epoch = 4;
        assert!(check_commit(Some(&reg), Some(&reg), &f).is_err(), "proof for another epoch");
        let made_up =
            CommitProofs { external: Some(ExternalProof { id: "00".repeat(16), sig: b64(&[0; 64]) }), admit: vec![] }
                .to_aad()
                .unwrap();
        let mut f = facts("dave", &made_up);
        f.external = true;
        assert_eq!(check_commit(Some(&reg), Some(&reg), &f).unwrap_err().code(), "SKYTALE_INVITE_INVALID");
        let mut f = facts("dave", b"");
        f.external = true;
        assert!(check_commit(Some(&reg), Some(&reg), &f).is_err(), "no proof");
        f.resync = true;
        check_commit(Some(&reg), Some(&reg), &f).unwrap();
        // Revocation: by a non-creator member refused, by the admin fine, never undone.
        let mut revoked = reg.clone();
        revoked.invites.get_mut(&t.id_hex()).unwrap().revoked = true;
        assert!(check_commit(Some(&reg), Some(&revoked), &facts("bob", b"")).is_err());
        check_commit(Some(&reg), Some(&revoked), &facts("alice", b"")).unwrap();
        assert!(check_commit(Some(&revoked), Some(&reg), &facts("alice", b"")).is_err());
        let mut f = facts("dave", &x);
        f.external = true;
        assert_eq!(check_commit(Some(&revoked), Some(&revoked), &f).unwrap_err().code(), "SKYTALE_INVITE_REVOKED");
    }

    #[test]
    fn decoding_garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"{", b"{\"roles\":{\"a\":\"king\"}}", &[0xff; 10]] {
            assert!(ChannelPolicy::decode(bytes).is_err());
        }
        assert_eq!(CommitProofs::from_aad(b"skytale-aad-v2:{garbage"), CommitProofs::default());
        let p = ChannelPolicy::for_creator("alice", Rules::default());
        assert_eq!(ChannelPolicy::decode(&p.encode().unwrap()).unwrap(), p);
    }
}
