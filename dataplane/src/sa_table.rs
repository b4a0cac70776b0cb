//! The SAs one worker owns.
//!
//! Inbound lookup is by SPI: the SPI names its shard, slot and generation
//! (see [`Spi`]), so `inbound(spi)` is an index into a vector plus one
//! compare — no hashing, no lock. Outbound lookup is by the crypto-ACL rule
//! the classifier matched, also a vector index. The SAs themselves live in a
//! slab; installing and removing (between bursts, from control messages) may
//! allocate, lookups never do.

use std::collections::HashMap;
use std::time::Instant;

use crate::api::{Direction, RuleId, SaParams, Spi};
use crate::error::Error;
use crate::sa::Sa;

/// Index of an SA in its table's slab; stable while the SA is installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SaIdx(pub u32);

/// "No SA" in the index vectors.
const NONE: u32 = u32::MAX;

/// Rule ids index a vector, so bound them (the classifier numbers its
/// expanded rules densely from 0).
pub const MAX_RULES: u32 = 1 << 20;

/// One worker's SAs.
#[derive(Debug)]
pub struct SaTable {
    shard: u8,
    slab: Vec<Option<Sa>>,
    free: Vec<u32>,
    /// Inbound slot (from the SPI) → slab index.
    by_slot: Vec<u32>,
    /// Rule id → slab index of the outbound SA currently used for it.
    by_rule: Vec<u32>,
    /// Outbound SPI → slab index, for delete/rekey (control path only).
    outbound_spi: HashMap<Spi, u32>,
}

impl SaTable {
    pub fn new(shard: u8) -> SaTable {
        SaTable {
            shard,
            slab: Vec::new(),
            free: Vec::new(),
            by_slot: Vec::new(),
            by_rule: Vec::new(),
            outbound_spi: HashMap::new(),
        }
    }

    pub fn shard(&self) -> u8 {
        self.shard
    }

    /// Number of installed SAs (both directions).
    pub fn len(&self) -> usize {
        self.slab.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn put(&mut self, sa: Sa) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = Some(sa);
                i
            }
            None => {
                self.slab.push(Some(sa));
                (self.slab.len() - 1) as u32
            }
        }
    }

    /// Builds and installs an SA. Inbound: the SPI must belong to this
    /// shard and its slot be free. Outbound: the SA becomes the one used for
    /// its rule (make-before-break: an older SA of the rule stays installed,
    /// unused for sending, until removed).
    pub fn install(&mut self, params: SaParams, now: Instant) -> Result<SaIdx, Error> {
        let spi = params.spi;
        match params.dir {
            Direction::Inbound => {
                if spi.shard() != self.shard {
                    return Err(Error::WrongShard {
                        spi,
                        owner: spi.shard(),
                        shard: self.shard,
                    });
                }
                let slot = spi.slot() as usize;
                if self.by_slot.get(slot).is_some_and(|i| *i != NONE) {
                    return Err(Error::SpiInUse(spi));
                }
                let sa = Sa::new(params, now)?;
                if self.by_slot.len() <= slot {
                    self.by_slot.resize(slot + 1, NONE);
                }
                let i = self.put(sa);
                self.by_slot[slot] = i;
                Ok(SaIdx(i))
            }
            Direction::Outbound => {
                let rule = params.rule.0;
                if rule >= MAX_RULES {
                    return Err(Error::RuleId(params.rule));
                }
                if self.outbound_spi.contains_key(&spi) {
                    return Err(Error::SpiInUse(spi));
                }
                let sa = Sa::new(params, now)?;
                let i = self.put(sa);
                let r = rule as usize;
                if self.by_rule.len() <= r {
                    self.by_rule.resize(r + 1, NONE);
                }
                self.by_rule[r] = i;
                self.outbound_spi.insert(spi, i);
                Ok(SaIdx(i))
            }
        }
    }

    /// `ControlMsg::RekeySa`: installs `new` (outbound) as the SA of its
    /// rule in one step; `old` keeps existing (and decrypting, if inbound)
    /// until removed. Fails, changing nothing, if `old` is unknown.
    pub fn rekey(&mut self, old: Spi, new: SaParams, now: Instant) -> Result<SaIdx, Error> {
        let dir = new.dir;
        let known = match dir {
            Direction::Outbound => self.outbound_spi.contains_key(&old),
            Direction::Inbound => self.inbound_index(old).is_some(),
        };
        if !known {
            return Err(Error::NoSuchSa { spi: old, dir });
        }
        self.install(new, now)
    }

    /// Removes an SA and returns it (for its final counters). If it was the
    /// outbound SA of its rule, the rule has no SA afterwards unless a newer
    /// one was installed for it.
    pub fn remove(&mut self, spi: Spi, dir: Direction) -> Option<Sa> {
        let i = match dir {
            Direction::Inbound => {
                let i = self.inbound_index(spi)?.0;
                self.by_slot[spi.slot() as usize] = NONE;
                i
            }
            Direction::Outbound => {
                let i = self.outbound_spi.remove(&spi)?;
                if let Some(sa) = self.slab.get(i as usize).and_then(Option::as_ref) {
                    let r = sa.rule().0 as usize;
                    if self.by_rule.get(r) == Some(&i) {
                        self.by_rule[r] = NONE;
                    }
                }
                i
            }
        };
        let sa = self.slab.get_mut(i as usize)?.take();
        self.free.push(i);
        sa
    }

    /// Inbound SA index for a received SPI: `None` if the SPI names another
    /// shard, a free slot, or an older generation of the slot (all counted
    /// as `UnknownSpi` by the caller).
    #[inline]
    pub fn inbound_index(&self, spi: Spi) -> Option<SaIdx> {
        if spi.shard() != self.shard {
            return None;
        }
        let i = *self.by_slot.get(spi.slot() as usize)?;
        if i == NONE {
            return None;
        }
        let sa = self.slab.get(i as usize)?.as_ref()?;
        (sa.spi() == spi).then_some(SaIdx(i))
    }

    #[inline]
    pub fn inbound(&mut self, spi: Spi) -> Option<&mut Sa> {
        let i = self.inbound_index(spi)?;
        self.get_mut(i)
    }

    /// The outbound SA currently used for `rule`.
    #[inline]
    pub fn outbound_index(&self, rule: RuleId) -> Option<SaIdx> {
        let i = *self.by_rule.get(rule.0 as usize)?;
        (i != NONE).then_some(SaIdx(i))
    }

    #[inline]
    pub fn outbound(&mut self, rule: RuleId) -> Option<&mut Sa> {
        let i = self.outbound_index(rule)?;
        self.get_mut(i)
    }

    /// An outbound SA by its SPI (control path: delete, show).
    pub fn outbound_by_spi(&mut self, spi: Spi) -> Option<&mut Sa> {
        let i = *self.outbound_spi.get(&spi)?;
        self.get_mut(SaIdx(i))
    }

    #[inline]
    pub fn get(&self, i: SaIdx) -> Option<&Sa> {
        self.slab.get(i.0 as usize)?.as_ref()
    }

    #[inline]
    pub fn get_mut(&mut self, i: SaIdx) -> Option<&mut Sa> {
        self.slab.get_mut(i.0 as usize)?.as_mut()
    }

    /// Every installed SA, for `show` and counter snapshots.
    pub fn iter(&self) -> impl Iterator<Item = &Sa> + '_ {
        self.slab.iter().flatten()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Sa> + '_ {
        self.slab.iter_mut().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Lifetime, SaKeys, Selector, Suite, TunnelEnds};

    fn params(spi: Spi, dir: Direction, rule: u32) -> SaParams {
        SaParams {
            spi,
            dir,
            suite: Suite::Aes128Gcm16,
            keys: SaKeys {
                encr: vec![1; 20],
                integ: vec![],
            },
            tunnel: TunnelEnds {
                local: "10.255.1.2".parse().unwrap(),
                remote: "10.255.2.2".parse().unwrap(),
                udp_encap: None,
            },
            selector: Selector::between(
                "192.168.100.0/24".parse().unwrap(),
                "172.16.10.0/24".parse().unwrap(),
            ),
            esn: false,
            replay_window: 64,
            lifetime: Lifetime::UNLIMITED,
            rule: RuleId(rule),
            child_id: 1,
            resource: None,
            more_selectors: Vec::new(),
        }
    }

    #[test]
    fn inbound_lookup_checks_shard_and_generation() {
        let now = Instant::now();
        let mut t = SaTable::new(2);
        let spi = Spi::new(2, 1, 7);
        t.install(params(spi, Direction::Inbound, 0), now).unwrap();
        assert!(t.inbound(spi).is_some());
        assert!(t.inbound(Spi::new(2, 2, 7)).is_none(), "stale generation");
        assert!(t.inbound(Spi::new(3, 1, 7)).is_none(), "other shard");
        assert!(t.inbound(Spi::new(2, 1, 8)).is_none(), "free slot");
        assert!(t.inbound(Spi::new(2, 1, 100_000)).is_none(), "past the end");
        assert!(matches!(
            t.install(params(spi, Direction::Inbound, 0), now),
            Err(Error::SpiInUse(_))
        ));
        assert!(matches!(
            t.install(params(Spi::new(1, 1, 1), Direction::Inbound, 0), now),
            Err(Error::WrongShard { .. })
        ));
        assert!(t.remove(spi, Direction::Inbound).is_some());
        assert!(t.inbound(spi).is_none());
        assert!(t.remove(spi, Direction::Inbound).is_none());
        // The slot comes back under a new generation; the slab slot is reused.
        t.install(params(Spi::new(2, 2, 7), Direction::Inbound, 0), now)
            .unwrap();
        assert!(t.inbound(spi).is_none());
        assert!(t.inbound(Spi::new(2, 2, 7)).is_some());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn outbound_rekey_is_make_before_break() {
        let now = Instant::now();
        let mut t = SaTable::new(0);
        let old = Spi(0xc001_0001);
        let new = Spi(0xc001_0002);
        t.install(params(old, Direction::Outbound, 3), now).unwrap();
        assert_eq!(t.outbound(RuleId(3)).unwrap().spi(), old);
        assert!(t.outbound(RuleId(4)).is_none());
        assert!(t
            .rekey(Spi(1234), params(new, Direction::Outbound, 3), now)
            .is_err());
        t.rekey(old, params(new, Direction::Outbound, 3), now)
            .unwrap();
        assert_eq!(t.outbound(RuleId(3)).unwrap().spi(), new);
        // Deleting the old SA leaves the rule on the new one.
        assert!(t.remove(old, Direction::Outbound).is_some());
        assert_eq!(t.outbound(RuleId(3)).unwrap().spi(), new);
        assert!(t.remove(new, Direction::Outbound).is_some());
        assert!(t.outbound(RuleId(3)).is_none());
        assert!(t.is_empty());
        assert!(matches!(
            t.install(params(new, Direction::Outbound, MAX_RULES), now),
            Err(Error::RuleId(_))
        ));
    }

    /// Measures what an installed inbound SA costs (suite and window of the
    /// scaling bench: AES-256-CBC + HMAC-SHA-256, 64-packet window) by
    /// counting what the table owns: slab capacity, slot index capacity and
    /// each SA's heap. The goal is 512 B: ~410 B today (100 B of keys —
    /// raw key + HMAC states —, ~304 B inline, 4 B index; see
    /// bench/README.md "SA table").
    #[test]
    fn memory_per_sa() {
        let now = Instant::now();
        let n = 4096usize;
        let mut t = SaTable::new(0);
        for slot in 0..n as u32 {
            let mut p = params(Spi::new(0, 1, slot), Direction::Inbound, 0);
            p.suite = Suite::Aes256CbcHmacSha256;
            p.keys = SaKeys {
                encr: vec![3; 32],
                integ: vec![4; 32],
            };
            t.install(p, now).unwrap();
        }
        let owned = t.slab.capacity() * std::mem::size_of::<Option<Sa>>()
            + t.by_slot.capacity() * std::mem::size_of::<u32>()
            + t.iter().map(Sa::heap_bytes).sum::<usize>();
        let per_sa = owned / n;
        let sa = t.iter().next().unwrap();
        println!(
            "Sa: {} B inline + {} B heap (keys); {per_sa} B per installed SA",
            std::mem::size_of::<Sa>(),
            sa.heap_bytes()
        );
        assert!(per_sa <= 512, "{per_sa} B per SA");
    }
}
