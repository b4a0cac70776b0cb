//! The compiled classifier: a HyperSplit-style decision tree over the five
//! fields (src, dst, proto, src port, dst port), one tree per address family.
//!
//! Each rule is a box of five inclusive ranges. An inner node cuts the space
//! on one field at up to fifteen points (sixteen children; the child is the
//! number of points <= the key, found with four SSE2 compares for IPv4).
//! Each point is chosen like a HyperSplit binary split: it minimises the
//! larger side's rule count plus the number of rules copied to both sides
//! (balance alone let wide rules multiply the tree tenfold at 10k rules). The
//! first point picks the field; up to three more levels of points on that
//! same field follow, which makes the tree a quarter as deep as a binary one.
//! What a large rule set adds to a lookup is its levels, so 16 ways beat 8:
//! 4.1 instead of 5.2 levels at 10k rules, for 1.5x the nodes.
//!
//! A leaf is a block of at most `LANES` rules in priority order, stored
//! field by field so one vectorised pass tests them all; the lowest matching
//! lane is the first match. Leaves are referenced inline from their parent
//! (no leaf node to load). A rule that covers a node's whole region ends the
//! scan there, so every rule behind it is cut from that subtree.
//!
//! A burst walks the tree level by level for all its flows at once and
//! prefetches each flow's next node or leaf, so the cache misses of
//! different flows overlap (rte_acl runs several flows through its tries the
//! same way). The few leaves shallower than most get pass-through nodes
//! above them, so the top levels have no leaves at all and every flow walks
//! them without the check and bookkeeping of which flows are done.

/// Largest leaf; below this a linear scan beats further splitting.
const LEAF_RULES: usize = LANES;
/// Bounds the build's recursion; a leaf at this depth just holds more rules.
const MAX_DEPTH: u32 = 48;
/// Children per inner node: up to four binary splits on one field, taken
/// in one step, so a lookup walks a quarter of the levels.
const WAYS: usize = 16;
/// A child reference with this bit set is a leaf, inline:
/// `LEAF | blocks << START_BITS | first block`, so no leaf node is loaded.
const LEAF: u32 = 1 << 31;
/// Any other reference is `dim << DIM_SHIFT | node index`: the parent says
/// which field its child tests, so the key field is fetched while the node
/// itself is still loading.
const DIM_SHIFT: u32 = 28;
const NODE_MASK: u32 = (1 << DIM_SHIFT) - 1;
const START_BITS: u32 = 23;
const MAX_LEAF_BLOCKS: usize = (1 << (31 - START_BITS)) - 1;
/// Flows walked through the tree together.
pub(crate) const CHUNK: usize = 64;

/// A field value; `u32` for IPv4 trees, `u128` for IPv6 trees.
pub(crate) trait Key: Copy + Ord + Default + std::fmt::Debug {
    const MAX: Self;
    /// The value as a node compares it, in the same order: `u32` becomes a
    /// biased `i32` because SSE2, the x86_64 baseline, only compares signed
    /// lanes.
    type Cut: Copy + Ord + std::fmt::Debug;
    fn cut(self) -> Self::Cut;
    /// The child slot of a node for `k`: how many of the node's ascending
    /// thresholds `at` are <= `k`, less one (`at[0]` is the least value, so
    /// it always counts).
    #[inline(always)]
    fn slot(at: &[Self::Cut; WAYS], k: Self::Cut) -> usize {
        slot_portable(at, k)
    }
    fn succ(self) -> Self;
    fn pred(self) -> Self;
    /// The value of a proto or port field (always < 2^16).
    fn low16(self) -> u16;
}

impl Key for u32 {
    const MAX: Self = u32::MAX;
    type Cut = i32;
    #[inline(always)]
    fn cut(self) -> i32 {
        (self ^ 1 << 31) as i32
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn slot(at: &[i32; WAYS], k: i32) -> usize {
        // SAFETY: SSE2 is part of the x86_64 baseline, so every CPU this
        // code runs on has the one feature `slot_sse2` is compiled for.
        unsafe { slot_sse2(at, k) }
    }
    fn succ(self) -> Self {
        self.saturating_add(1)
    }
    fn pred(self) -> Self {
        self.saturating_sub(1)
    }
    fn low16(self) -> u16 {
        self as u16
    }
}

/// `Key::slot` by plain counting (IPv6 trees, and IPv4 off x86_64); LLVM
/// vectorises it only partly, which is why IPv4 has its own below.
#[inline(always)]
fn slot_portable<C: Copy + Ord>(at: &[C; WAYS], k: C) -> usize {
    let mut way = 0usize;
    for t in at {
        way += (*t <= k) as usize;
    }
    way.wrapping_sub(1) % WAYS
}

/// `Key::slot` for IPv4 in four SSE2 compares. Thresholds ascend, so the
/// lanes greater than `k` are a suffix and the first of them is the count
/// of lanes <= `k`: one bit scan, no popcount (not in the x86_64 baseline).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
#[inline]
fn slot_sse2(at: &[i32; WAYS], k: i32) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_cmpgt_epi32, _mm_loadu_si128, _mm_movemask_epi8, _mm_packs_epi16,
        _mm_packs_epi32, _mm_set1_epi32,
    };
    const _: () = assert!(WAYS == 16);
    let kv = _mm_set1_epi32(k);
    let lanes = at.as_ptr().cast::<__m128i>();
    // SAFETY: `i < 4`, so the 16 bytes read lie within `at` (64 bytes);
    // `loadu` needs no alignment.
    let gt = |i: usize| _mm_cmpgt_epi32(unsafe { _mm_loadu_si128(lanes.add(i)) }, kv);
    let lo = _mm_packs_epi32(gt(0), gt(1));
    let hi = _mm_packs_epi32(gt(2), gt(3));
    let above = _mm_movemask_epi8(_mm_packs_epi16(lo, hi)) as u32;
    ((above | 1 << WAYS).trailing_zeros() as usize).wrapping_sub(1) % WAYS
}

impl Key for u128 {
    const MAX: Self = u128::MAX;
    type Cut = u128;
    #[inline(always)]
    fn cut(self) -> u128 {
        self
    }
    fn succ(self) -> Self {
        self.saturating_add(1)
    }
    fn pred(self) -> Self {
        self.saturating_sub(1)
    }
    fn low16(self) -> u16 {
        self as u16
    }
}

/// One rule as five inclusive ranges, plus its index in priority order.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Boxed<K> {
    pub lo: [K; 5],
    pub hi: [K; 5],
    pub index: u32,
}

impl<K: Key> Boxed<K> {
    fn covers(&self, region: &[(K, K); 5]) -> bool {
        (0..5).all(|d| self.lo[d] <= region[d].0 && region[d].1 <= self.hi[d])
    }
}

/// Rules per leaf block.
const LANES: usize = 8;

/// Up to `LANES` rules of a leaf, field by field, so one pass of
/// comparisons (vectorised by the compiler) tests them all at once.
/// Unused lanes hold an empty range and never match.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Block<K> {
    src_lo: [K; LANES],
    src_hi: [K; LANES],
    dst_lo: [K; LANES],
    dst_hi: [K; LANES],
    sport_lo: [u16; LANES],
    sport_hi: [u16; LANES],
    dport_lo: [u16; LANES],
    dport_hi: [u16; LANES],
    proto_lo: [u8; LANES],
    proto_hi: [u8; LANES],
    index: [u32; LANES],
}

impl<K: Key> Block<K> {
    fn empty() -> Block<K> {
        Block {
            src_lo: [K::MAX; LANES],
            src_hi: [K::default(); LANES],
            dst_lo: [K::MAX; LANES],
            dst_hi: [K::default(); LANES],
            sport_lo: [u16::MAX; LANES],
            sport_hi: [0; LANES],
            dport_lo: [u16::MAX; LANES],
            dport_hi: [0; LANES],
            proto_lo: [u8::MAX; LANES],
            proto_hi: [0; LANES],
            index: [u32::MAX; LANES],
        }
    }

    fn set(&mut self, lane: usize, b: &Boxed<K>) {
        self.src_lo[lane] = b.lo[0];
        self.src_hi[lane] = b.hi[0];
        self.dst_lo[lane] = b.lo[1];
        self.dst_hi[lane] = b.hi[1];
        self.proto_lo[lane] = b.lo[2].low16() as u8;
        self.proto_hi[lane] = b.hi[2].low16() as u8;
        self.sport_lo[lane] = b.lo[3].low16();
        self.sport_hi[lane] = b.hi[3].low16();
        self.dport_lo[lane] = b.lo[4].low16();
        self.dport_hi[lane] = b.hi[4].low16();
        self.index[lane] = b.index;
    }

    /// Bit `l` set when lane `l` matches.
    #[inline(always)]
    fn matches(&self, key: &[K; 5]) -> u32 {
        let (p, sp, dp) = (key[2].low16() as u8, key[3].low16(), key[4].low16());
        let mut m = 0u32;
        for l in 0..LANES {
            // Non-short-circuit `&` keeps this branch-free.
            let ok = (self.src_lo[l] <= key[0])
                & (key[0] <= self.src_hi[l])
                & (self.dst_lo[l] <= key[1])
                & (key[1] <= self.dst_hi[l])
                & (self.proto_lo[l] <= p)
                & (p <= self.proto_hi[l])
                & (self.sport_lo[l] <= sp)
                & (sp <= self.sport_hi[l])
                & (self.dport_lo[l] <= dp)
                & (dp <= self.dport_hi[l]);
            m |= (ok as u32) << l;
        }
        m
    }
}

#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Node<K: Key> {
    /// Ascending thresholds, `at[0]` the smallest key so that it always
    /// counts; unused ones are `K::MAX`. A whole array, no odd lane out, so
    /// the count below is a few vector compares.
    at: [K::Cut; WAYS],
    /// Child `i` takes keys with exactly `i + 1` thresholds <= key (unused
    /// slots repeat the last child): a node or an inline leaf reference.
    child: [u32; WAYS],
}

impl<K: Key> Node<K> {
    fn empty() -> Node<K> {
        let mut at = [K::MAX.cut(); WAYS];
        at[0] = K::default().cut();
        Node {
            at,
            child: [LEAF; WAYS],
        }
    }

    /// The child for `k` (already `cut`).
    #[inline(always)]
    fn next(&self, k: K::Cut) -> u32 {
        self.child[K::slot(&self.at, k)]
    }
}

/// One decision tree. Immutable once built.
#[derive(Debug)]
pub(crate) struct Tree<K: Key> {
    /// A node index or an inline leaf (a tree of few rules is one leaf).
    root: u32,
    nodes: Vec<Node<K>>,
    /// Leaves' rules, copied in place so a leaf scan reads one run of memory.
    leaf_rules: Vec<Block<K>>,
    /// Levels above the shallowest leaf.
    sure: u32,
}

/// Build statistics, for benches and tuning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeStats {
    pub nodes: usize,
    /// Leaf blocks of `LANES` rules each.
    pub leaf_blocks: usize,
    pub max_depth: u32,
}

impl<K: Key> Tree<K> {
    /// No rules: one empty leaf.
    pub(crate) fn empty() -> Tree<K> {
        Tree {
            root: LEAF,
            nodes: Vec::new(),
            leaf_rules: Vec::new(),
            sure: 0,
        }
    }

    /// Builds the tree for `rules`, given in priority order. `None` when
    /// a leaf or the whole tree outgrows the inline leaf encoding (more than
    /// ~1,000 rules overlapping in one leaf, or ~8M leaf blocks).
    pub(crate) fn build(rules: Vec<Boxed<K>>) -> Option<(Tree<K>, TreeStats)> {
        let mut b = Builder {
            rules,
            nodes: Vec::new(),
            leaf_rules: Vec::new(),
            max_depth: 0,
            leaf_depths: Vec::new(),
            overflow: false,
        };
        let all: Vec<u32> = (0..b.rules.len() as u32).collect();
        let region = [(K::default(), K::MAX); 5];
        let root = b.build(all, region, 0);
        let sure = b.levels_without_leaves();
        let root = b.pad(root, 0, sure);
        if b.overflow {
            return None;
        }
        let stats = TreeStats {
            nodes: b.nodes.len(),
            leaf_blocks: b.leaf_rules.len(),
            max_depth: b.max_depth,
        };
        Some((
            Tree {
                root,
                nodes: b.nodes,
                leaf_rules: b.leaf_rules,
                sure,
            },
            stats,
        ))
    }

    /// Classifies the first `n` of `keys`, writing each key's first
    /// matching rule index (or `u32::MAX`) into `out`.
    #[inline]
    pub(crate) fn classify_chunk(&self, keys: &[[K; 5]; CHUNK], n: usize, out: &mut [u32; CHUNK]) {
        let n = n.min(CHUNK);
        let mut cur = [self.root; CHUNK];
        let nodes = &self.nodes[..];
        // One step of flow `i` down from its node; returns whether it is
        // still at a node. `inner`: it surely is (a level above `sure - 1`).
        let step = |cur: &mut [u32; CHUNK], i: usize, inner: bool| {
            let c = cur[i];
            let k = keys[i][((c >> DIM_SHIFT) as usize).min(4)].cut();
            let Some(node) = nodes.get((c & NODE_MASK) as usize) else {
                return false;
            };
            let c = node.next(k);
            cur[i] = c;
            // Branch-free: whether a flow has reached its leaf is a coin
            // toss the predictor cannot learn, and a miss costs more
            // than prefetching a leaf block's worth of lines after a node.
            let leaf = c & LEAF != 0;
            let next = nodes
                .as_ptr()
                .wrapping_add((c & NODE_MASK) as usize)
                .cast::<u8>();
            if inner {
                prefetch_span(next, std::mem::size_of::<Node<K>>());
                return true;
            }
            let block = self
                .leaf_rules
                .as_ptr()
                .wrapping_add((c & ((1 << START_BITS) - 1)) as usize)
                .cast::<u8>();
            prefetch_lines::<K>(std::hint::select_unpredictable(leaf, block, next));
            !leaf
        };
        // The first `sure` levels have no leaves: every flow takes them,
        // with no bookkeeping of who is done.
        for level in 0..self.sure {
            if level + 1 < self.sure {
                for i in 0..n {
                    step(&mut cur, i, true);
                }
            } else {
                for i in 0..n {
                    step(&mut cur, i, false);
                }
            }
        }
        // Then level by level: each pass moves every unfinished flow one
        // node down; flows that reached a leaf drop out of `active`.
        let mut active = [0u8; CHUNK];
        let mut live = 0;
        for (i, &c) in cur.iter().enumerate().take(n) {
            active[live] = i as u8;
            live += (c & LEAF == 0) as usize;
        }
        while live > 0 {
            let mut still = 0;
            for j in 0..live {
                let i = active[j] as usize % CHUNK;
                active[still] = i as u8;
                still += step(&mut cur, i, false) as usize;
            }
            live = still;
        }
        for i in 0..n {
            let c = cur[i];
            let start = (c & ((1 << START_BITS) - 1)) as usize;
            let end = start + ((c & !LEAF) >> START_BITS) as usize;
            out[i] = u32::MAX;
            if let Some(blocks) = self.leaf_rules.get(start..end) {
                for b in blocks {
                    let m = b.matches(&keys[i]);
                    if m != 0 {
                        out[i] = b.index[m.trailing_zeros() as usize];
                        break;
                    }
                }
            }
        }
    }
}

/// Asks for the cache line at `p` without waiting for it: the flows of a
/// burst take turns, so the line is there when its flow comes back to it.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: SSE is part of the x86_64 baseline, and a prefetch is a
        // hint that never faults, whatever address it is given.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The cache lines of one leaf block or node from `p`.
#[inline(always)]
fn prefetch_lines<K: Key>(p: *const u8) {
    prefetch_span(
        p,
        std::mem::size_of::<Block<K>>().max(std::mem::size_of::<Node<K>>()),
    );
}

/// The cache lines of the `len` bytes from `p`.
#[inline(always)]
fn prefetch_span(p: *const u8, len: usize) {
    let mut off = 0;
    while off < len {
        prefetch(p.wrapping_add(off));
        off += 64;
    }
}

struct Builder<K: Key> {
    rules: Vec<Boxed<K>>,
    nodes: Vec<Node<K>>,
    leaf_rules: Vec<Block<K>>,
    max_depth: u32,
    /// Leaves made at each depth.
    leaf_depths: Vec<usize>,
    overflow: bool,
}

impl<K: Key> Builder<K> {
    /// Stores a leaf; returns its inline reference.
    fn leaf(&mut self, rules: &[u32], depth: u32) -> u32 {
        let d = depth as usize;
        if self.leaf_depths.len() <= d {
            self.leaf_depths.resize(d + 1, 0);
        }
        self.leaf_depths[d] += 1;
        let start = self.leaf_rules.len();
        for chunk in rules.chunks(LANES) {
            let mut block = Block::empty();
            for (lane, &r) in chunk.iter().enumerate() {
                block.set(lane, &self.rules[r as usize]);
            }
            self.leaf_rules.push(block);
        }
        let blocks = self.leaf_rules.len() - start;
        if blocks > MAX_LEAF_BLOCKS || self.leaf_rules.len() >= 1 << START_BITS {
            self.overflow = true;
        }
        LEAF | (blocks as u32) << START_BITS | start as u32
    }

    /// How many levels to make leaf-free by putting pass-through nodes
    /// above the few shallowest leaves: the lookup walks those levels for
    /// all flows with no check for who is done. At most 1% more nodes than
    /// leaves.
    fn levels_without_leaves(&self) -> u32 {
        let leaves: usize = self.leaf_depths.iter().sum();
        let mut sure = 0;
        for d in 1..self.leaf_depths.len() {
            let pads: usize = (0..d).map(|e| self.leaf_depths[e] * (d - e)).sum();
            if self.leaf_depths[0] == 0 && pads * 100 <= leaves {
                sure = d as u32;
            }
        }
        sure
    }

    /// Puts pass-through nodes above every leaf of the subtree `r` (at
    /// `depth`) shallower than `sure`; returns the new reference to `r`.
    fn pad(&mut self, r: u32, depth: u32, sure: u32) -> u32 {
        if r & LEAF != 0 {
            let mut r = r;
            for _ in depth..sure {
                let mut node = Node::empty();
                node.child = [r; WAYS];
                if self.nodes.len() > NODE_MASK as usize {
                    self.overflow = true;
                    return r;
                }
                r = self.nodes.len() as u32;
                self.nodes.push(node);
            }
            return r;
        }
        let at = (r & NODE_MASK) as usize;
        let Some(mut node) = self.nodes.get(at).copied() else {
            return r;
        };
        if depth + 1 >= sure {
            return r;
        }
        let mut prev: Option<(u32, u32)> = None;
        for c in node.child.iter_mut() {
            let new = match prev {
                // Unused slots repeat the last child: keep sharing it.
                Some((old, new)) if old == *c => new,
                _ => self.pad(*c, depth + 1, sure),
            };
            prev = Some((*c, new));
            *c = new;
        }
        if let Some(n) = self.nodes.get_mut(at) {
            *n = node;
        }
        r
    }

    /// Builds the subtree for the rules intersecting `region` (priority
    /// order); returns its reference.
    fn build(&mut self, mut rules: Vec<u32>, region: [(K, K); 5], depth: u32) -> u32 {
        self.max_depth = self.max_depth.max(depth);
        // Everything behind a rule covering the whole region is unreachable here.
        if let Some(p) = rules
            .iter()
            .position(|&r| self.rules[r as usize].covers(&region))
        {
            rules.truncate(p + 1);
        }
        if rules.len() <= LEAF_RULES || depth >= MAX_DEPTH || self.overflow {
            return self.leaf(&rules, depth);
        }
        let Some((dim, split)) = self.choose_split(&rules, &region, 0..5) else {
            return self.leaf(&rules, depth);
        };
        // Split the same field up to three times: parts in ascending order.
        let mut parts = vec![(region, rules)];
        let mut first = Some(split);
        for _ in 0..WAYS.trailing_zeros() {
            let mut next = Vec::with_capacity(parts.len() * 2);
            for (reg, rs) in parts {
                let split = match first.take() {
                    Some(s) => Some(s),
                    None if rs.len() > LEAF_RULES => {
                        self.choose_split(&rs, &reg, dim..dim + 1).map(|(_, s)| s)
                    }
                    None => None,
                };
                let Some(split) = split else {
                    next.push((reg, rs));
                    continue;
                };
                let (mut left, mut right) = (Vec::new(), Vec::new());
                for &r in &rs {
                    let rule = &self.rules[r as usize];
                    if rule.lo[dim] < split {
                        left.push(r);
                    }
                    if rule.hi[dim] >= split {
                        right.push(r);
                    }
                }
                let (mut lreg, mut rreg) = (reg, reg);
                lreg[dim].1 = split.pred();
                rreg[dim].0 = split;
                next.push((lreg, left));
                next.push((rreg, right));
            }
            parts = next;
        }
        let at = self.nodes.len();
        self.nodes.push(Node::empty());
        let mut node = Node::empty();
        let last = parts.len() - 1;
        for (i, (reg, rs)) in parts.into_iter().enumerate() {
            if i > 0 {
                node.at[i] = reg[dim].0.cut();
            }
            node.child[i] = self.build(rs, reg, depth + 1);
        }
        for i in last + 1..WAYS {
            node.child[i] = node.child[last];
        }
        if let Some(n) = self.nodes.get_mut(at) {
            *n = node;
        }
        if at > NODE_MASK as usize {
            self.overflow = true;
        }
        (dim as u32) << DIM_SHIFT | at as u32
    }

    /// The (field, point) whose split leaves the smallest larger side.
    fn choose_split(
        &self,
        rules: &[u32],
        region: &[(K, K); 5],
        dims: std::ops::Range<usize>,
    ) -> Option<(usize, K)> {
        let n = rules.len();
        let mut best: Option<(usize, usize, usize, K)> = None; // (max, sum, dim, at)
        let mut los: Vec<K> = Vec::with_capacity(n);
        let mut his: Vec<K> = Vec::with_capacity(n);
        let mut cands: Vec<K> = Vec::with_capacity(2 * n);
        for (dim, &(rlo, rhi)) in region.iter().enumerate() {
            if !dims.contains(&dim) {
                continue;
            }
            los.clear();
            his.clear();
            cands.clear();
            for &r in rules {
                let rule = &self.rules[r as usize];
                let lo = rule.lo[dim].max(rlo);
                let hi = rule.hi[dim].min(rhi);
                los.push(lo);
                his.push(hi);
                if lo > rlo {
                    cands.push(lo);
                }
                if hi < rhi {
                    cands.push(hi.succ());
                }
            }
            if cands.is_empty() {
                continue;
            }
            los.sort_unstable();
            his.sort_unstable();
            cands.sort_unstable();
            cands.dedup();
            for &t in &cands {
                // Rules with lo < t reach the left side, rules with hi >= t the right.
                let left = los.partition_point(|&x| x < t);
                let right = n - his.partition_point(|&x| x < t);
                // Balance (the larger side) plus replication (rules sent
                // both ways): balance alone blows up memory 10x at 10k rules.
                let cand = (left.max(right) + (left + right - n), left + right, dim, t);
                if best.is_none_or(|b| (cand.0, cand.1) < (b.0, b.1)) {
                    best = Some(cand);
                }
            }
        }
        // Every candidate is a rule endpoint strictly inside the region, so
        // both children have fewer endpoints inside theirs: the build ends.
        best.map(|b| (b.2, b.3))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SSE2 slot search agrees with plain counting on every kind of
    /// node: few or all thresholds used, keys on, between and beyond them.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn slot_sse2_matches_portable() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for used in 0..WAYS {
            for _ in 0..200 {
                let mut cuts: Vec<u32> = (0..used).map(|_| rand() as u32 % 1000).collect();
                if rand() % 4 == 0 {
                    cuts.push(u32::MAX);
                }
                cuts.sort_unstable();
                cuts.dedup();
                cuts.retain(|&c| c != 0);
                cuts.truncate(WAYS - 1);
                let mut at = Node::<u32>::empty().at;
                for (i, c) in cuts.iter().enumerate() {
                    at[i + 1] = c.cut();
                }
                let mut keys = vec![0, 1, u32::MAX, u32::MAX - 1, rand() as u32];
                for &c in &cuts {
                    keys.extend([c - 1, c, c.saturating_add(1)]);
                }
                for k in keys {
                    // SAFETY: SSE2 is part of the x86_64 baseline.
                    let fast = unsafe { slot_sse2(&at, k.cut()) };
                    assert_eq!(fast, slot_portable(&at, k.cut()), "{cuts:?} {k}");
                }
            }
        }
    }

    fn rand_box(rand: &mut impl FnMut() -> u64, index: u32) -> Boxed<u32> {
        let mut lo = [0u32; 5];
        let mut hi = [0u32; 5];
        for d in 0..2 {
            // Prefixes of 10.0.0.0/8, mostly long, some wide.
            let len = [8, 16, 24, 24, 28, 32, 32][(rand() % 7) as usize];
            let mask = if len == 32 { 0 } else { u32::MAX >> len };
            lo[d] = (0x0a00_0000 | (rand() as u32 & 0x00ff_ffff)) & !mask;
            hi[d] = lo[d] | mask;
        }
        let proto = [0, 6, 17][(rand() % 3) as usize];
        (lo[2], hi[2]) = if proto == 0 { (0, 255) } else { (proto, proto) };
        (lo[3], hi[3]) = (0, 65535);
        let p = (rand() % 2000) as u32;
        (lo[4], hi[4]) = [(0, 65535), (p, p), (p, p + 300)][(rand() % 3) as usize];
        Boxed { lo, hi, index }
    }

    /// Trees big enough to get pass-through nodes over their shallowest
    /// leaves still find the first match.
    #[test]
    fn padded_tree_matches_linear_scan() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut padded = 0;
        for n in [300, 1000, 3000, 6000] {
            let rules: Vec<Boxed<u32>> = (0..n).map(|i| rand_box(&mut rand, i)).collect();
            let (tree, _) = Tree::build(rules.clone()).unwrap();
            // A pass-through node sends every key to the same leaf.
            padded += tree
                .nodes
                .iter()
                .filter(|n| n.child[0] & LEAF != 0 && n.child.iter().all(|&c| c == n.child[0]))
                .count();
            let mut keys = [[0u32; 5]; CHUNK];
            for _ in 0..200 {
                for k in keys.iter_mut() {
                    let r = &rules[(rand() % n as u64) as usize];
                    for (d, f) in k.iter_mut().enumerate() {
                        let span = (r.hi[d] - r.lo[d]) as u64 + 1;
                        *f = r.lo[d] + (rand() % span) as u32;
                    }
                    if rand() % 5 == 0 {
                        k[4] = rand() as u16 as u32;
                    }
                }
                let mut out = [0u32; CHUNK];
                tree.classify_chunk(&keys, CHUNK, &mut out);
                for (k, &o) in keys.iter().zip(&out) {
                    let want = rules
                        .iter()
                        .find(|r| (0..5).all(|d| r.lo[d] <= k[d] && k[d] <= r.hi[d]))
                        .map_or(u32::MAX, |r| r.index);
                    assert_eq!(o, want, "{n} rules, key {k:?}");
                }
            }
        }
        assert!(padded > 0, "no tree got pass-through nodes");
    }
}
