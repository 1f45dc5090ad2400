//! Who is in the cluster, as far as this node knows.
//!
//! A member is known either directly (a live link to it) or by hearsay (a
//! linked peer says it is alive). Links exchange their member lists; a node
//! learns of members it was not configured with this way, and the node layer
//! dials some of them. A member with no link that nobody has vouched for
//! within a timeout is marked down.
//!
//! Pure bookkeeping: time comes in as an argument, nothing here blocks.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::node::peer::LinkInfo;
use crate::replication::MemberInfo;
use crate::store::NodeId;

/// What this node believes about one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Linked, or vouched for by a linked peer recently.
    Alive,
    /// Not linked, and nobody vouched for it within the timeout.
    Down,
}

#[derive(Clone, Debug)]
struct Member {
    addr: String,
    state: State,
    linked: bool,
    last_heard: Instant,
}

/// What a new link meant for the member table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Joined {
    /// A member not known before.
    New,
    /// A new member at the address of an old one, which was forgotten.
    Replaced(NodeId),
    /// A member already known.
    Known,
}

/// The member table.
#[derive(Default, Debug)]
pub struct Members {
    map: HashMap<NodeId, Member>,
}

impl Members {
    /// A link to `id` came up. A member that was known at the same address
    /// under another id is forgotten: that node restarted, and ids are
    /// drawn anew at each start.
    pub fn linked(&mut self, id: NodeId, addr: &str, now: Instant) -> Joined {
        let replaced = self
            .map
            .iter()
            .find(|(other, m)| **other != id && m.addr == addr && !m.linked)
            .map(|(other, _)| *other);
        if let Some(old) = replaced {
            self.map.remove(&old);
        }
        let new = !self.map.contains_key(&id);
        let m = self.map.entry(id).or_insert_with(|| Member {
            addr: addr.to_string(),
            state: State::Alive,
            linked: true,
            last_heard: now,
        });
        m.addr = addr.to_string();
        m.state = State::Alive;
        m.linked = true;
        m.last_heard = now;
        match (new, replaced) {
            (true, Some(old)) => Joined::Replaced(old),
            (true, None) => Joined::New,
            (false, _) => Joined::Known,
        }
    }

    /// The last link to `id` went down; hearsay may keep it alive a while.
    pub fn unlinked(&mut self, id: NodeId, now: Instant) {
        if let Some(m) = self.map.get_mut(&id) {
            m.linked = false;
            m.last_heard = now;
        }
    }

    /// Merges a peer's member list. Returns the members heard of for the
    /// first time (the node may dial them).
    pub fn merge(
        &mut self,
        self_id: NodeId,
        list: Vec<MemberInfo>,
        now: Instant,
    ) -> Vec<MemberInfo> {
        let mut learned = Vec::new();
        for info in list {
            if info.id == self_id {
                continue;
            }
            match self.map.get_mut(&info.id) {
                Some(m) if info.alive => {
                    m.last_heard = now;
                    m.state = State::Alive;
                    if !m.linked {
                        m.addr = info.addr.clone();
                    }
                }
                Some(_) => {}
                None if info.alive => {
                    self.map.insert(
                        info.id,
                        Member {
                            addr: info.addr.clone(),
                            state: State::Alive,
                            linked: false,
                            last_heard: now,
                        },
                    );
                    learned.push(info);
                }
                None => {}
            }
        }
        learned
    }

    /// Marks down every unlinked member not vouched for within `timeout`.
    /// Returns those that just went down, with their addresses.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<(NodeId, String)> {
        let mut down = Vec::new();
        for (id, m) in &mut self.map {
            if !m.linked && m.state == State::Alive && now.duration_since(m.last_heard) > timeout {
                m.state = State::Down;
                down.push((*id, m.addr.clone()));
            }
        }
        down
    }

    /// The list to send to peers: this node, and every member with its
    /// state. Only a direct link counts as evidence of life, so that a dead
    /// member stops being vouched for once its last neighbour loses it.
    pub fn gossip_list(
        &self,
        self_id: NodeId,
        self_addr: &str,
        links: &[LinkInfo],
    ) -> Vec<MemberInfo> {
        let mut list = vec![MemberInfo {
            id: self_id,
            addr: self_addr.to_string(),
            alive: true,
        }];
        for (id, m) in &self.map {
            list.push(MemberInfo {
                id: *id,
                addr: m.addr.clone(),
                alive: links.iter().any(|l| l.id == *id),
            });
        }
        list
    }

    /// One line per member for `PEERS`: id, address, state, link.
    pub fn describe(&self, self_id: NodeId, self_addr: &str, links: &[LinkInfo]) -> Vec<String> {
        let mut lines = vec![format!("{self_id:016x} {self_addr} self -")];
        let mut members: Vec<_> = self.map.iter().collect();
        members.sort_by(|a, b| a.1.addr.cmp(&b.1.addr));
        for (id, m) in members {
            let link = links.iter().find(|l| l.id == *id);
            let state = match (&m.state, link) {
                (_, Some(_)) => "alive",
                (State::Alive, None) => "alive",
                (State::Down, None) => "down",
            };
            let link = match link {
                Some(l) if l.dialed => "link-out",
                Some(_) => "link-in",
                None => "no-link",
            };
            lines.push(format!("{id:016x} {} {state} {link}", m.addr));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: NodeId, alive: bool) -> MemberInfo {
        MemberInfo {
            id,
            addr: format!("127.0.0.1:{id}"),
            alive,
        }
    }

    #[test]
    fn learns_new_alive_members_once_and_skips_itself() {
        let mut m = Members::default();
        let now = Instant::now();
        let learned = m.merge(1, vec![info(1, true), info(2, true), info(3, false)], now);
        assert_eq!(learned, vec![info(2, true)]);
        assert!(m.merge(1, vec![info(2, true)], now).is_empty());
    }

    #[test]
    fn unlinked_members_go_down_when_nobody_vouches() {
        let mut m = Members::default();
        let t0 = Instant::now();
        m.linked(2, "a:1", t0);
        m.unlinked(2, t0);
        assert!(
            m.expire(t0 + Duration::from_secs(1), Duration::from_secs(5))
                .is_empty()
        );
        let down = m.expire(t0 + Duration::from_secs(6), Duration::from_secs(5));
        assert_eq!(down, vec![(2, "a:1".to_string())]);
        // Already down: reported once.
        assert!(
            m.expire(t0 + Duration::from_secs(9), Duration::from_secs(5))
                .is_empty()
        );
        // Vouched for again: alive.
        m.merge(1, vec![info(2, true)], t0 + Duration::from_secs(10));
        let lines = m.describe(1, "me:1", &[]);
        assert!(lines[1].contains(" alive no-link"), "{lines:?}");
    }

    #[test]
    fn a_restarted_node_replaces_its_old_id() {
        let mut m = Members::default();
        let t0 = Instant::now();
        assert_eq!(m.linked(2, "a:1", t0), Joined::New);
        m.unlinked(2, t0);
        assert_eq!(m.linked(3, "a:1", t0), Joined::Replaced(2));
        assert_eq!(m.linked(3, "a:1", t0), Joined::Known);
        assert_eq!(m.describe(1, "me:1", &[]).len(), 2);
    }

    #[test]
    fn linked_members_never_expire() {
        let mut m = Members::default();
        let t0 = Instant::now();
        m.linked(2, "a:1", t0);
        assert!(
            m.expire(t0 + Duration::from_secs(100), Duration::from_secs(5))
                .is_empty()
        );
    }

    #[test]
    fn gossip_vouches_only_for_linked_members() {
        let mut m = Members::default();
        let t0 = Instant::now();
        m.linked(2, "a:2", t0);
        m.merge(1, vec![info(3, true)], t0);
        let links = vec![LinkInfo {
            id: 2,
            addr: "a:2".into(),
            dialed: true,
            queued: 0,
        }];
        let list = m.gossip_list(1, "me:1", &links);
        assert!(list.contains(&MemberInfo {
            id: 1,
            addr: "me:1".into(),
            alive: true
        }));
        assert!(list.iter().any(|i| i.id == 2 && i.alive));
        assert!(list.iter().any(|i| i.id == 3 && !i.alive));
    }
}
