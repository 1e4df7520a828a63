//! The channel policy inside the MLS group: reading it from the group context, the commits that
//! change it (roles, invites, admissions, removals that drop roles, leave proposals) and the
//! facts of an incoming commit that [`crate::policy::check_commit`] judges.

use openmls::prelude::*;

use super::{ensure_ready, finish_commit, serialize, Agent, Inner};
use crate::error::{Error, Result};
use crate::events::{CommitMode, CommitOutput, Incoming};
use crate::invite::InviteToken;
use crate::policy::{
    b64, check_commit, Action, Admission, ChannelPolicy, CommitFacts, CommitProofs, InviteEntry, Role, Rules,
    POLICY_EXTENSION_TYPE,
};
use crate::provider::Provider;

/// Capabilities of every leaf this agent creates: the policy extension is supported.
pub(crate) fn leaf_capabilities() -> Capabilities {
    Capabilities::builder().extensions(vec![ExtensionType::Unknown(POLICY_EXTENSION_TYPE)]).build()
}

/// The group-context extensions that hold `policy` (and require support for it).
pub(crate) fn policy_extensions(policy: &ChannelPolicy) -> Result<Extensions<GroupContext>> {
    Extensions::from_vec(vec![
        Extension::RequiredCapabilities(RequiredCapabilitiesExtension::new(
            &[ExtensionType::Unknown(POLICY_EXTENSION_TYPE)],
            &[],
            &[],
        )),
        Extension::Unknown(POLICY_EXTENSION_TYPE, UnknownExtension(policy.encode()?)),
    ])
    .map_err(|e| Error::Internal(format!("policy extension: {e}")))
}

/// The policy in a set of group-context extensions (`None`: a channel without one).
pub(crate) fn policy_of(ext: &Extensions<GroupContext>) -> Result<Option<ChannelPolicy>> {
    ext.unknown(POLICY_EXTENSION_TYPE).map(|u| ChannelPolicy::decode(&u.0)).transpose()
}

/// Identity of a member leaf.
fn leaf_identity(group: &MlsGroup, idx: LeafNodeIndex) -> Option<String> {
    group.member(idx).map(super::credential_identity)
}

/// Judges a staged commit of another member (or an external joiner) against the channel policy.
pub(crate) fn check_staged(
    name: &str,
    group: &MlsGroup,
    staged: &StagedCommit,
    committer: &str,
    external: bool,
    aad: &[u8],
    at: u64,
) -> Result<()> {
    let old = policy_of(group.extensions())?;
    let new = policy_of(staged.group_context().extensions())?;
    let added: Vec<(String, Vec<u8>)> = staged
        .add_proposals()
        .map(|p| {
            let leaf = p.add_proposal().key_package().leaf_node();
            (super::credential_identity(leaf.credential()), leaf.signature_key().as_slice().to_vec())
        })
        .collect();
    let removed: Vec<(String, bool)> = staged
        .remove_proposals()
        .filter_map(|p| {
            let idx = p.remove_proposal().removed();
            let own = matches!(p.sender(), Sender::Member(s) if *s == idx);
            leaf_identity(group, idx).map(|id| (id, own))
        })
        .collect();
    let resync = external && removed.iter().any(|(id, _)| id == committer);
    let removed_ids: Vec<&str> = removed.iter().map(|(id, _)| id.as_str()).collect();
    let mut members_after: Vec<String> = group
        .members()
        .map(|m| super::credential_identity(&m.credential))
        .filter(|id| !removed_ids.contains(&id.as_str()))
        .collect();
    members_after.extend(added.iter().map(|(id, _)| id.clone()));
    if external {
        members_after.push(committer.to_string());
    }
    let facts = CommitFacts {
        channel: name,
        committer,
        external,
        resync,
        from_epoch: group.epoch().as_u64(),
        at,
        added,
        removed,
        members_after,
        aad,
    };
    check_commit(old.as_ref(), new.as_ref(), &facts)
}

/// What a commit built here contains.
#[derive(Default)]
pub(crate) struct CommitPlan {
    pub adds: Vec<KeyPackage>,
    pub removes: Vec<LeafNodeIndex>,
    pub policy: Option<ChannelPolicy>,
    pub aad: Vec<u8>,
    pub consume_pending: bool,
    pub force_self_update: bool,
}

/// Builds and stages (or merges) a commit: the one way this agent makes commits, so every
/// commit states exactly its proposals (pending proposals only when asked) and its policy.
pub(crate) fn build_commit(
    provider: &Provider<'_>,
    group: &mut MlsGroup,
    signer: &crate::signer::AgentSigner,
    plan: CommitPlan,
    mode: CommitMode,
) -> Result<(MlsMessageOut, Option<MlsMessageOut>)> {
    if !plan.consume_pending && !leave_requests(group).is_empty() {
        // Merging this commit would void the members' leave requests (MLS drops the proposals
        // an epoch's commit does not cover): they are committed first.
        return Err(Error::LeavePending(String::from_utf8_lossy(group.group_id().as_slice()).into_owned()));
    }
    group.set_aad(plan.aad);
    let mut builder = group
        .commit_builder()
        .consume_proposal_store(plan.consume_pending)
        .force_self_update(plan.force_self_update)
        .propose_adds(plan.adds)
        .propose_removals(plan.removes);
    if let Some(p) = &plan.policy {
        builder = builder
            .propose_group_context_extensions(policy_extensions(p)?)
            .map_err(|e| Error::Internal(format!("policy proposal: {e}")))?;
    }
    let bundle = builder
        .load_psks(provider.storage())
        .map_err(|e| Error::Storage(format!("psks: {e:?}")))?
        .build(provider.rand(), provider.crypto(), signer, |_| true)
        .map_err(|e| Error::InvalidArgument(format!("commit: {e}")))?
        .stage_commit(provider)
        .map_err(|e| Error::Internal(format!("stage commit: {e}")))?;
    let (commit, welcome, _) = bundle.into_messages();
    finish_commit(provider, group, mode)?;
    Ok((commit, welcome))
}

/// The policy of a group, or the error for a channel without one.
fn require_policy(name: &str, group: &MlsGroup) -> Result<ChannelPolicy> {
    policy_of(group.extensions())?
        .ok_or_else(|| Error::InvalidState(format!("channel {name} has no policy (created by an older version)")))
}

/// Parses one KeyPackage message (validated, our ciphersuite).
pub(crate) fn parse_key_package(inner: &Inner, bytes: &[u8]) -> Result<KeyPackage> {
    let kp_in = match super::parse_message(bytes)?.extract() {
        MlsMessageBodyIn::KeyPackage(kp) => kp,
        _ => return Err(Error::InvalidMessage("not a KeyPackage".into())),
    };
    let kp = kp_in
        .validate(&inner.crypto, ProtocolVersion::Mls10)
        .map_err(|e| Error::InvalidMessage(format!("key package: {e}")))?;
    if kp.ciphersuite() != super::CIPHERSUITE {
        return Err(Error::InvalidMessage("key package of another ciphersuite".into()));
    }
    Ok(kp)
}

impl Agent {
    /// The channel's policy (roles, rules, invites); `None` for a channel created before
    /// policies existed (every member may do everything there).
    pub fn policy(&self, name: &str) -> Result<Option<ChannelPolicy>> {
        let mut inner = self.lock()?;
        policy_of(inner.group(name)?.extensions())
    }

    /// Whether this agent may do `action` in the channel by its role.
    pub fn may(&self, name: &str, action: Action) -> Result<bool> {
        Ok(self.policy(name)?.map(|p| p.may(&self.identity, action)).unwrap_or(true))
    }

    /// Runs `change` on a copy of the channel's policy and commits the result (a
    /// GroupContextExtensions commit). The change is checked as every member will check it.
    fn commit_policy_change(
        &self,
        name: &str,
        mode: CommitMode,
        change: impl FnOnce(&mut ChannelPolicy, &str) -> Result<()>,
    ) -> Result<CommitOutput> {
        let mut inner = self.lock()?;
        inner.transaction(Some(name), |inner| {
            let me_id = inner.identity.clone();
            let (crypto, conn, signer) = (&inner.crypto, inner.store.conn(), &inner.signer);
            let group = inner.groups.get_mut(name).ok_or_else(|| Error::ChannelNotFound(name.to_string()))?;
            ensure_ready(name, group)?;
            let old = require_policy(name, group)?;
            let mut new = old.clone();
            change(&mut new, &me_id)?;
            let members: Vec<String> = group.members().map(|m| super::credential_identity(&m.credential)).collect();
            let facts = CommitFacts {
                channel: name,
                committer: &me_id,
                external: false,
                resync: false,
                from_epoch: group.epoch().as_u64(),
                at: super::now() as u64,
                added: vec![],
                removed: vec![],
                members_after: members,
                aad: &[],
            };
            check_commit(Some(&old), Some(&new), &facts)?;
            let provider = Provider::new(crypto, conn);
            let from_epoch = group.epoch().as_u64();
            let plan = CommitPlan { policy: Some(new), ..Default::default() };
            let (commit, _) = build_commit(&provider, group, signer, plan, mode)?;
            Ok(CommitOutput {
                commit: serialize(&commit)?,
                welcome: None,
                from_epoch,
                epoch: from_epoch + 1,
                added: vec![],
                removed: vec![],
            })
        })
    }

    /// Gives `identity` (a current member) `role` (a commit; needs the `policy` role).
    pub fn set_role(&self, name: &str, identity: &str, role: Role, mode: CommitMode) -> Result<CommitOutput> {
        let members = self.members(name)?;
        if !members.iter().any(|m| m == identity) {
            return Err(Error::MemberNotFound(identity.to_string()));
        }
        self.commit_policy_change(name, mode, |p, _| {
            match role {
                Role::Admin => p.roles.insert(identity.to_string(), Role::Admin),
                Role::Member => p.roles.remove(identity),
            };
            Ok(())
        })
    }

    /// Replaces the channel's rules (a commit; needs the `policy` role).
    pub fn set_rules(&self, name: &str, rules: Rules, mode: CommitMode) -> Result<CommitOutput> {
        self.commit_policy_change(name, mode, |p, _| {
            p.rules = rules;
            Ok(())
        })
    }

    /// Registers an invite in the channel policy (a commit; needs the `invite` role).
    pub fn register_invite(
        &self,
        name: &str,
        invite: &InviteToken,
        expires_at: u64,
        max_uses: u32,
        mode: CommitMode,
    ) -> Result<CommitOutput> {
        self.commit_policy_change(name, mode, |p, me_id| {
            p.invites.insert(
                invite.id_hex(),
                InviteEntry {
                    public_key: b64(&invite.public_key()),
                    expires_at,
                    max_uses,
                    created_by: me_id.to_string(),
                    revoked: false,
                    used: vec![],
                },
            );
            Ok(())
        })
    }

    /// Revokes a registered invite (a commit; its creator or a `policy` admin).
    pub fn revoke_invite(&self, name: &str, invite_id: &str, mode: CommitMode) -> Result<CommitOutput> {
        self.commit_policy_change(name, mode, |p, _| match p.invites.get_mut(invite_id) {
            Some(e) if !e.revoked => {
                e.revoked = true;
                Ok(())
            }
            Some(_) => Err(Error::Invite { code: "SKYTALE_INVITE_REVOKED", message: "already revoked".into() }),
            None => Err(Error::Invite { code: "SKYTALE_INVITE_INVALID", message: "no such invite".into() }),
        })
    }

    /// Records that `identity` (a member that joined by external commit) used `invite_id` (a
    /// commit any member may make; it only lowers what is left of the invite).
    pub fn record_invite_use(
        &self,
        name: &str,
        invite_id: &str,
        identity: &str,
        mode: CommitMode,
    ) -> Result<CommitOutput> {
        self.commit_policy_change(name, mode, |p, _| match p.invites.get_mut(invite_id) {
            Some(e) if !e.used.iter().any(|u| u == identity) => {
                e.used.push(identity.to_string());
                Ok(())
            }
            Some(_) => Err(Error::InvalidState("already recorded".into())),
            None => Err(Error::Invite { code: "SKYTALE_INVITE_INVALID", message: "no such invite".into() }),
        })
    }

    /// Adds an invited joiner: its key package and the admission proof from its join request.
    /// Any member may commit this; it counts as the decision of the admin that made the invite.
    pub fn admit_with_invite(
        &self,
        name: &str,
        key_package: &[u8],
        invite_id: &str,
        admission_sig: &[u8],
        mode: CommitMode,
    ) -> Result<CommitOutput> {
        let mut inner = self.lock()?;
        inner.transaction(Some(name), |inner| {
            let kp = parse_key_package(inner, key_package)?;
            let who = super::credential_identity(kp.leaf_node().credential());
            inner.verifier(name)?.check(
                kp.leaf_node().credential(),
                kp.leaf_node().signature_key().as_slice(),
                Some(&who),
                Some(super::now() as u64),
            )?;
            let (crypto, conn, signer) = (&inner.crypto, inner.store.conn(), &inner.signer);
            let group = inner.groups.get_mut(name).ok_or_else(|| Error::ChannelNotFound(name.to_string()))?;
            ensure_ready(name, group)?;
            if group.members().any(|m| super::credential_identity(&m.credential) == who) {
                return Err(Error::InvalidArgument(format!("'{who}' is already a member")));
            }
            let old = require_policy(name, group)?;
            let mut new = old.clone();
            old.usable_invite(invite_id, &who, super::now() as u64)?;
            if let Some(e) = new.invites.get_mut(invite_id) {
                e.used.push(who.clone());
            }
            let proofs = CommitProofs {
                external: None,
                admit: vec![Admission { id: invite_id.to_string(), who: who.clone(), sig: b64(admission_sig) }],
            };
            let aad = proofs.to_aad()?;
            let mut members: Vec<String> = group.members().map(|m| super::credential_identity(&m.credential)).collect();
            members.push(who.clone());
            let facts = CommitFacts {
                channel: name,
                committer: &inner.identity,
                external: false,
                resync: false,
                from_epoch: group.epoch().as_u64(),
                at: super::now() as u64,
                added: vec![(who.clone(), kp.leaf_node().signature_key().as_slice().to_vec())],
                removed: vec![],
                members_after: members,
                aad: &aad,
            };
            check_commit(Some(&old), Some(&new), &facts)?;
            let provider = Provider::new(crypto, conn);
            let from_epoch = group.epoch().as_u64();
            let plan = CommitPlan { adds: vec![kp], policy: Some(new), aad, ..Default::default() };
            let (commit, welcome) = build_commit(&provider, group, signer, plan, mode)?;
            Ok(CommitOutput {
                commit: serialize(&commit)?,
                welcome: welcome.as_ref().map(serialize).transpose()?,
                from_epoch,
                epoch: from_epoch + 1,
                added: vec![who],
                removed: vec![],
            })
        })
    }

    /// A proposal to remove this agent from the channel (MLS self-remove), for another member
    /// to commit: how a member without the `remove` role leaves.
    pub fn leave_proposal(&self, name: &str) -> Result<Vec<u8>> {
        self.own_proposal(name, |group, provider, signer| {
            group.leave_group(provider, signer).map_err(|e| Error::InvalidState(format!("leave: {e}")))
        })
    }

    /// A proposal of this agent in `name`, made by `make` in one keystore transaction.
    fn own_proposal(
        &self,
        name: &str,
        make: impl FnOnce(&mut MlsGroup, &Provider<'_>, &crate::signer::AgentSigner) -> Result<MlsMessageOut>,
    ) -> Result<Vec<u8>> {
        let mut inner = self.lock()?;
        inner.transaction(Some(name), |inner| {
            let (crypto, conn, signer) = (&inner.crypto, inner.store.conn(), &inner.signer);
            let group = inner.groups.get_mut(name).ok_or_else(|| Error::ChannelNotFound(name.to_string()))?;
            ensure_ready(name, group)?;
            let provider = Provider::new(crypto, conn);
            serialize(&make(group, &provider, signer)?)
        })
    }

    /// The invite uses of external joins to `name` that this agent saw and that are not known to
    /// be recorded in the channel policy yet, as `(invite id, joiner)`. Each is noted in the
    /// keystore in the transaction that applies the join (and by [`Agent::owe_invite_use`]), so
    /// a restart cannot lose one; [`Agent::settle_invite_use`] clears it.
    pub fn owed_invite_uses(&self, name: &str) -> Result<Vec<(String, String)>> {
        let prefix = invite_use_owed_prefix(name);
        Ok(self
            .kv_list(&prefix)?
            .into_iter()
            .filter_map(|(key, _)| {
                let rest = key.strip_prefix(&prefix)?;
                let (id, identity) = rest.split_once('/')?;
                Some((id.to_string(), identity.to_string()))
            })
            .collect())
    }

    /// Notes that the use of `invite_id` by `identity` in `name` is to be recorded in the policy
    /// (the joiner's own external join; members note others' when they apply them).
    pub fn owe_invite_use(&self, name: &str, invite_id: &str, identity: &str) -> Result<()> {
        self.kv_put(&invite_use_owed_key(name, invite_id, identity), &[])
    }

    /// The use of `invite_id` by `identity` in `name` is recorded (or can no longer be).
    pub fn settle_invite_use(&self, name: &str, invite_id: &str, identity: &str) -> Result<()> {
        self.kv_delete(&invite_use_owed_key(name, invite_id, identity))
    }

    /// Members whose leave request a commit of another member voided (it ended the epoch
    /// without covering the request) and who are still in `name`: they left, but stay silent
    /// members until removed. Noted in the transaction that applied that commit; an admin's
    /// client removes them ([`Agent::settle_voided_leave`] clears the note).
    pub fn voided_leaves(&self, name: &str) -> Result<Vec<String>> {
        let prefix = voided_leave_prefix(name);
        let noted: Vec<String> = self
            .kv_list(&prefix)?
            .into_iter()
            .filter_map(|(k, _)| k.strip_prefix(&prefix).map(str::to_string))
            .collect();
        Ok(noted)
    }

    /// The voided leave of `identity` in `name` is dealt with (removed, or not this agent's to do).
    pub fn settle_voided_leave(&self, name: &str, identity: &str) -> Result<()> {
        self.kv_delete(&format!("{}{identity}", voided_leave_prefix(name)))
    }

    /// Whether members' leave requests (self-remove proposals) wait in `name`'s proposal store
    /// for a commit. The store is in the keystore, so a commit a restart left undone is found
    /// again ([`Agent::commit_leave_requests`] does it).
    pub fn has_leave_requests(&self, name: &str) -> Result<bool> {
        let mut inner = self.lock()?;
        let group = inner.group(name)?;
        Ok(!leave_requests(group).is_empty())
    }

    /// An Update proposal of this agent's leaf: never sent by the SDK (members refuse any
    /// proposal but a leave request). Exists for tests that show the other members refuse it.
    #[doc(hidden)]
    pub fn update_proposal_unsupported(&self, name: &str) -> Result<Vec<u8>> {
        self.own_proposal(name, |group, provider, signer| {
            group
                .propose_self_update(provider, signer, LeafNodeParameters::default())
                .map(|(msg, _)| msg)
                .map_err(|e| Error::InvalidState(format!("update proposal: {e}")))
        })
    }

    /// Commits the pending self-remove proposals of members that asked to leave (dropping their
    /// roles). `SKYTALE_INVALID_STATE` when there is nothing to commit.
    pub fn commit_leave_requests(&self, name: &str, mode: CommitMode) -> Result<CommitOutput> {
        let mut inner = self.lock()?;
        inner.transaction(Some(name), |inner| {
            let (crypto, conn, signer) = (&inner.crypto, inner.store.conn(), &inner.signer);
            let group = inner.groups.get_mut(name).ok_or_else(|| Error::ChannelNotFound(name.to_string()))?;
            ensure_ready(name, group)?;
            let leaving = leave_requests(group);
            if leaving.is_empty() {
                return Err(Error::InvalidState("no leave request to commit".into()));
            }
            let policy = policy_of(group.extensions())?.map(|mut p| {
                for (_, id) in &leaving {
                    p.roles.remove(id);
                }
                p
            });
            let changed = policy.as_ref() != policy_of(group.extensions())?.as_ref();
            let provider = Provider::new(crypto, conn);
            let from_epoch = group.epoch().as_u64();
            let plan = CommitPlan {
                policy: if changed { policy } else { None },
                consume_pending: true,
                force_self_update: true,
                ..Default::default()
            };
            let (commit, welcome) = build_commit(&provider, group, signer, plan, mode)?;
            Ok(CommitOutput {
                commit: serialize(&commit)?,
                welcome: welcome.as_ref().map(serialize).transpose()?,
                from_epoch,
                epoch: from_epoch + 1,
                added: vec![],
                removed: leaving.into_iter().map(|(_, id)| id).collect(),
            })
        })
    }
}

/// The policy change a removal of `removed` needs (their roles dropped), if any.
pub(crate) fn policy_after_removal(group: &MlsGroup, removed: &[String]) -> Result<Option<ChannelPolicy>> {
    let Some(old) = policy_of(group.extensions())? else {
        return Ok(None);
    };
    let mut new = old.clone();
    new.roles.retain(|k, _| !removed.contains(k));
    Ok(if new == old { None } else { Some(new) })
}

/// Local check before this agent commits adds or removes (fails fast with the verdict every
/// member would reach).
pub(crate) fn require(group: &MlsGroup, who: &str, action: Action) -> Result<()> {
    match policy_of(group.extensions())? {
        Some(p) if !p.may(who, action) => Err(Error::PolicyDenied(format!(
            "'{who}' is a {} here; this needs the {} role",
            p.role(who).as_str(),
            match action {
                Action::Add => p.rules.add,
                Action::Remove => p.rules.remove,
                Action::Invite => p.rules.invite,
                Action::ChangePolicy => p.rules.policy,
            }
            .as_str()
        ))),
        _ => Ok(()),
    }
}

/// The members that asked to leave `group` (their self-remove proposals, by leaf), this agent
/// excluded.
fn leave_requests(group: &MlsGroup) -> Vec<(LeafNodeIndex, String)> {
    let own = group.own_leaf_index();
    group
        .pending_proposals()
        .filter_map(|q| match (q.proposal(), q.sender()) {
            (Proposal::Remove(r), Sender::Member(s)) if *s == r.removed() && r.removed() != own => {
                leaf_identity(group, r.removed()).map(|id| (r.removed(), id))
            }
            _ => None,
        })
        .collect()
}

fn invite_use_owed_prefix(name: &str) -> String {
    format!("invite-use-owed/{name}/")
}

fn invite_use_owed_key(name: &str, invite_id: &str, identity: &str) -> String {
    format!("{}{invite_id}/{identity}", invite_use_owed_prefix(name))
}

/// In the transaction that applies a delivered commit: an external join with an invite proof
/// owes a record of that use in the channel policy ([`Agent::owed_invite_uses`]).
pub(super) fn owe_external_join_use(conn: &rusqlite::Connection, name: &str, event: &Incoming) -> Result<()> {
    if let Incoming::Commit { external: true, resync: false, authenticated_data, sender, .. } = event {
        if let Some(proof) = CommitProofs::from_aad(authenticated_data).external {
            conn.prepare_cached("INSERT OR IGNORE INTO skytale_kv (key, value) VALUES (?1, x'')")?
                .execute([invite_use_owed_key(name, &proof.id, sender)])?;
        }
    }
    Ok(())
}

/// The identities of [`leave_requests`].
pub(super) fn leave_request_identities(group: &MlsGroup) -> Vec<String> {
    leave_requests(group).into_iter().map(|(_, id)| id).collect()
}

fn voided_leave_prefix(name: &str) -> String {
    format!("leave-voided/{name}/")
}

/// In the transaction that applies a delivered commit: the members in `leaving` (their leave
/// requests waited before it) that the commit did not remove left for nothing; noted for
/// [`Agent::voided_leaves`].
pub(super) fn note_voided_leaves(
    conn: &rusqlite::Connection,
    name: &str,
    leaving: &[String],
    event: &Incoming,
) -> Result<()> {
    let Incoming::Commit { removed, self_removed: false, .. } = event else { return Ok(()) };
    for id in leaving.iter().filter(|id| !removed.contains(id)) {
        conn.prepare_cached("INSERT OR IGNORE INTO skytale_kv (key, value) VALUES (?1, x'')")?
            .execute([format!("{}{id}", voided_leave_prefix(name))])?;
    }
    Ok(())
}
