//! Randomized MLS group test: for fixed seeds, 500 random add/remove/rotate/send steps on a
//! group of 3-6 members. After every step all current members agree on the epoch and on an
//! exported secret, every member decrypts every message, and removed members cannot read.

use rand::{seq::SliceRandom, Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use skytale_core::{Agent, AgentOptions, CommitMode, CommitOutput, Incoming, KeystoreSecret, SecretKey32};

const CHANNEL: &str = "acme/fuzz/group";
const POOL: usize = 8;
const STEPS: usize = 500;
const SEEDS: [u64; 3] = [7, 1234, 987_654_321];

struct Sim {
    agents: Vec<Agent>,
    members: Vec<usize>,
    removed: Vec<usize>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Sim {
    fn new(rng: &mut ChaCha8Rng) -> Sim {
        let mut dirs = Vec::new();
        let mut agents = Vec::new();
        for i in 0..POOL {
            let dir = tempfile::tempdir().unwrap();
            let secret = KeystoreSecret::Key(SecretKey32::from_bytes(rng.gen()));
            agents.push(
                Agent::open(AgentOptions { data_dir: dir.path(), identity: &format!("agent-{i}"), secret: &secret })
                    .unwrap(),
            );
            dirs.push(dir);
        }
        agents[0].create_channel_with_rules(CHANNEL, skytale_core::policy::Rules::open()).unwrap();
        let mut sim = Sim { agents, members: vec![0], removed: vec![], _dirs: dirs };
        let initial = rng.gen_range(3..=6);
        while sim.members.len() < initial {
            let candidates = sim.non_members();
            let who = *candidates.choose(rng).unwrap();
            sim.add(0, who);
        }
        sim
    }

    fn non_members(&self) -> Vec<usize> {
        (0..POOL).filter(|i| !self.members.contains(i)).collect()
    }

    fn fan_out_commit(&mut self, committer: usize, out: &CommitOutput) {
        for &m in &self.members.clone() {
            if m == committer {
                continue;
            }
            match self.agents[m].process_incoming(CHANNEL, &out.commit).unwrap() {
                Incoming::Commit { epoch, self_removed, .. } => {
                    assert_eq!(epoch, out.epoch);
                    if self_removed {
                        assert!(out.removed.contains(&format!("agent-{m}")));
                    }
                }
                other => panic!("expected a commit, got {other:?}"),
            }
        }
    }

    fn add(&mut self, committer: usize, who: usize) {
        let kp = self.agents[who].generate_key_packages(1).unwrap();
        let out = self.agents[committer].add_members(CHANNEL, &kp, CommitMode::Merge).unwrap();
        self.fan_out_commit(committer, &out);
        let name = self.agents[who].join_channel(out.welcome.as_ref().unwrap()).unwrap();
        assert_eq!(name, CHANNEL);
        self.members.push(who);
        self.removed.retain(|&r| r != who);
    }

    fn remove(&mut self, committer: usize, who: usize) {
        let out = self.agents[committer].remove_members(CHANNEL, &[format!("agent-{who}")], CommitMode::Merge).unwrap();
        self.fan_out_commit(committer, &out);
        self.members.retain(|&m| m != who);
        self.removed.push(who);
        assert!(!self.agents[who].is_member(CHANNEL).unwrap());
    }

    fn rotate(&mut self, committer: usize) {
        let out = self.agents[committer].rotate_key(CHANNEL, CommitMode::Merge).unwrap();
        self.fan_out_commit(committer, &out);
    }

    fn send(&mut self, sender: usize, rng: &mut ChaCha8Rng) {
        let len = rng.gen_range(0..300);
        let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let wire = self.agents[sender].encrypt(CHANNEL, &data).unwrap();
        for &m in &self.members {
            if m == sender {
                continue;
            }
            match self.agents[m].process_incoming(CHANNEL, &wire).unwrap() {
                Incoming::Message { sender: s, data: d, .. } => {
                    assert_eq!(s, format!("agent-{sender}"));
                    assert_eq!(d, data);
                }
                other => panic!("expected a message, got {other:?}"),
            }
        }
        for &r in &self.removed {
            let err = self.agents[r].process_incoming(CHANNEL, &wire).unwrap_err();
            assert!(
                matches!(err.code(), "SKYTALE_NOT_A_MEMBER" | "SKYTALE_DECRYPT_FAILED"),
                "removed member got {}",
                err.code()
            );
            assert_eq!(self.agents[r].encrypt(CHANNEL, b"x").unwrap_err().code(), "SKYTALE_NOT_A_MEMBER");
        }
    }

    fn check_agreement(&self) {
        let first = self.members[0];
        let epoch = self.agents[first].epoch(CHANNEL).unwrap();
        let secret = self.agents[first].export_secret(CHANNEL, "check", b"", 32).unwrap();
        let mut expected: Vec<String> = self.members.iter().map(|m| format!("agent-{m}")).collect();
        expected.sort();
        for &m in &self.members {
            assert_eq!(self.agents[m].epoch(CHANNEL).unwrap(), epoch);
            assert_eq!(*self.agents[m].export_secret(CHANNEL, "check", b"", 32).unwrap(), *secret);
            let mut got = self.agents[m].members(CHANNEL).unwrap();
            got.sort();
            assert_eq!(got, expected);
        }
    }
}

#[test]
fn random_add_remove_rotate_send_keeps_members_in_agreement() {
    for seed in SEEDS {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut sim = Sim::new(&mut rng);
        sim.check_agreement();
        for _ in 0..STEPS {
            let committer = *sim.members.choose(&mut rng).unwrap();
            match rng.gen_range(0..10) {
                0..=1 if sim.members.len() < 6 => {
                    let who = *sim.non_members().choose(&mut rng).unwrap();
                    sim.add(committer, who);
                }
                2..=3 if sim.members.len() > 3 => {
                    let others: Vec<usize> = sim.members.iter().copied().filter(|&m| m != committer).collect();
                    let who = *others.choose(&mut rng).unwrap();
                    sim.remove(committer, who);
                }
                4 => sim.rotate(committer),
                _ => sim.send(committer, &mut rng),
            }
            sim.check_agreement();
        }
    }
}
