//! `show access-list` in the ASA's format, and the same view as plain data
//! for JSON (the caller serializes [`AclView`]).
//!
//! The ASA's hash ids are internal; ours are FNV-1a (32 bit) of the text,
//! so they are stable across runs and change when the line changes.

use serde::Serialize;

use super::acl::AccessList;
use crate::api::{RuleId, Selector};

/// FNV-1a, 32 bit.
pub fn fnv1a32(s: &str) -> u32 {
    s.bytes()
        .fold(0x811c_9dc5, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AclView {
    pub name: String,
    /// Expanded entries (remarks excluded), as the ASA counts "elements".
    pub elements: usize,
    pub name_hash: u32,
    pub lines: Vec<AclLineView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AclLineView {
    pub number: u32,
    pub text: String,
    pub remark: bool,
    /// Sum of the entries' counts.
    pub hitcnt: u64,
    pub hash: u32,
    /// Whether the entries are listed under the line.
    pub expanded: bool,
    pub entries: Vec<AclEntryView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AclEntryView {
    pub rule: RuleId,
    pub text: String,
    pub hitcnt: u64,
    pub hash: u32,
    pub selector: Selector,
}

/// Builds the view; `hits[rule]` is the summed hit count of each entry
/// (missing counts read as 0).
pub fn view(list: &AccessList, hits: &[u64]) -> AclView {
    let name = &list.name;
    let lines = list
        .lines
        .iter()
        .map(|l| {
            let entries: Vec<AclEntryView> = l
                .entries
                .iter()
                .map(|e| AclEntryView {
                    rule: e.id,
                    text: e.text.clone(),
                    hitcnt: hits.get(e.id.0 as usize).copied().unwrap_or(0),
                    hash: fnv1a32(&format!("access-list {name} {}", e.text)),
                    selector: e.selector.clone(),
                })
                .collect();
            AclLineView {
                number: l.number,
                text: l.text.clone(),
                remark: l.entries.is_empty(),
                hitcnt: entries.iter().map(|e| e.hitcnt).sum(),
                hash: fnv1a32(&format!("access-list {name} {}", l.text)),
                expanded: l.expanded,
                entries,
            }
        })
        .collect();
    AclView {
        name: name.clone(),
        elements: list.entries().count(),
        name_hash: fnv1a32(name),
        lines,
    }
}

/// The text of `show access-list NAME`.
pub fn render(v: &AclView) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let name = &v.name;
    let _ = writeln!(
        out,
        "access-list {name}; {} elements; name hash: 0x{:08x}",
        v.elements, v.name_hash
    );
    for l in &v.lines {
        let n = l.number;
        if l.remark {
            let _ = writeln!(out, "access-list {name} line {n} {}", l.text);
            continue;
        }
        let _ = writeln!(
            out,
            "access-list {name} line {n} {} (hitcnt={}) 0x{:08x}",
            l.text, l.hitcnt, l.hash
        );
        if l.expanded {
            for e in &l.entries {
                let _ = writeln!(
                    out,
                    "  access-list {name} line {n} {} (hitcnt={}) 0x{:08x}",
                    e.text, e.hitcnt, e.hash
                );
            }
        }
    }
    out
}
