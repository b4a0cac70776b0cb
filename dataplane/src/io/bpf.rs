//! A small BPF loader of our own: raw `bpf()` syscalls, no libbpf, no C
//! toolchain. It creates the XSKMAP, assembles and loads the XDP program that
//! steers packets to our AF_XDP sockets, and attaches it with a BPF link (so
//! the program detaches when the link fd closes, even if we crash), falling
//! back to a netlink `IFLA_XDP` attach (detached on drop) on kernels without
//! XDP links.
//!
//! The program is written as BPF instructions built by the [`Asm`] helpers;
//! [`redirect_program`] documents each block. Destination prefixes are baked
//! into the program at load time (no LPM map): changing them means loading a
//! new program, which an espgate restart does anyway.

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use ipnet::IpNet;

/// Why the loader failed. Carries the verifier log when the kernel rejected
/// the program.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("bpf({what}): {source}")]
    Syscall {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("verifier rejected the XDP program: {source}\n{log}")]
    Verifier {
        #[source]
        source: io::Error,
        log: String,
    },
    #[error("too many destination prefixes ({count}, at most {MAX_PREFIXES})")]
    TooManyPrefixes { count: usize },
    #[error("jump to an unbound label or too far")]
    BadJump,
    #[error("netlink XDP attach: {0}")]
    Netlink(io::Error),
}

/// Prefixes baked into one program; keeps it far below verifier limits.
pub const MAX_PREFIXES: usize = 64;

// uapi/linux/bpf.h: commands, map and program types.
const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_PROG_LOAD: u32 = 5;
const BPF_LINK_CREATE: u32 = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type` BPF_XDP.
const BPF_XDP: u32 = 37;
/// Helper `bpf_redirect_map(map, key, flags)`.
const HELPER_REDIRECT_MAP: i32 = 51;
/// `ld_imm64` source register meaning "imm is a map fd".
const BPF_PSEUDO_MAP_FD: u8 = 1;
/// XDP verdict: hand the packet to the kernel stack.
pub const XDP_PASS: i32 = 2;
/// XDP verdict: the packet went to `bpf_redirect_map`'s target.
pub const XDP_REDIRECT: i32 = 4;
// uapi/linux/if_link.h XDP_FLAGS_*
const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1 << 0;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// Where in the driver the program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) XDP: runs before an skb exists.
    Driver,
    /// Generic XDP: runs on the skb; works on every device.
    Skb,
}

impl AttachMode {
    fn flags(self) -> u32 {
        match self {
            AttachMode::Driver => XDP_FLAGS_DRV_MODE,
            AttachMode::Skb => XDP_FLAGS_SKB_MODE,
        }
    }
}

fn sys_bpf<T>(cmd: u32, attr: &mut T) -> io::Result<RawFd> {
    // SAFETY: `attr` is a `repr(C)` struct laid out like the member of the
    // kernel's `union bpf_attr` for `cmd`, valid for the call; the kernel
    // zero-extends attrs shorter than its own union.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut T as *mut c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as RawFd)
    }
}

fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful bpf() call that creates
    // a new descriptor, which nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn name16(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(name.bytes().take(15)) {
        *o = b;
    }
    out
}

/// A `BPF_MAP_TYPE_XSKMAP`: rx queue index → AF_XDP socket.
#[derive(Debug)]
pub struct XskMap {
    fd: OwnedFd,
    max_entries: u32,
}

#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

impl XskMap {
    pub fn create(max_entries: u32) -> Result<XskMap, BpfError> {
        let mut attr = MapCreateAttr {
            map_type: BPF_MAP_TYPE_XSKMAP,
            key_size: 4,
            value_size: 4,
            max_entries,
            map_flags: 0,
            inner_map_fd: 0,
            numa_node: 0,
            map_name: name16("espgate_xsks"),
        };
        let fd = sys_bpf(BPF_MAP_CREATE, &mut attr).map_err(|source| BpfError::Syscall {
            what: "MAP_CREATE xskmap",
            source,
        })?;
        Ok(XskMap {
            fd: owned(fd),
            max_entries,
        })
    }

    /// Points rx queue `queue` at the bound AF_XDP socket `xsk_fd`.
    pub fn insert(&self, queue: u32, xsk_fd: RawFd) -> Result<(), BpfError> {
        let key = queue;
        let value = xsk_fd as u32;
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            _pad: 0,
            key: &key as *const u32 as u64,
            value: &value as *const u32 as u64,
            flags: 0,
        };
        sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map_err(|source| BpfError::Syscall {
            what: "MAP_UPDATE_ELEM xskmap",
            source,
        })?;
        Ok(())
    }

    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// One BPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    /// dst in the low nibble, src in the high nibble.
    regs: u8,
    off: i16,
    imm: i32,
}

/// BPF registers. r0 return value, r1–r5 arguments (clobbered by calls),
/// r6–r9 callee-saved, r10 frame pointer.
#[derive(Clone, Copy, Debug)]
pub struct Reg(u8);
pub const R0: Reg = Reg(0);
pub const R1: Reg = Reg(1);
pub const R2: Reg = Reg(2);
pub const R3: Reg = Reg(3);
pub const R4: Reg = Reg(4);
pub const R5: Reg = Reg(5);
pub const R6: Reg = Reg(6);
pub const R7: Reg = Reg(7);
pub const R8: Reg = Reg(8);

// Instruction classes, sizes, modes, operations (uapi/linux/bpf_common.h).
const LD: u8 = 0x00;
const LDX: u8 = 0x01;
const ALU: u8 = 0x04;
const JMP: u8 = 0x05;
const JMP32: u8 = 0x06;
const ALU64: u8 = 0x07;
const MEM: u8 = 0x60;
const IMM: u8 = 0x00;
const DW: u8 = 0x18;
const K: u8 = 0x00;
const X: u8 = 0x08;
const OP_ADD: u8 = 0x00;
const OP_AND: u8 = 0x50;
const OP_LSH: u8 = 0x60;
const OP_MOV: u8 = 0xb0;
const OP_CALL: u8 = 0x80;
const OP_EXIT: u8 = 0x90;

/// Memory access width.
#[derive(Clone, Copy, Debug)]
pub enum Size {
    B = 0x10,
    H = 0x08,
    W = 0x00,
}

/// Conditional jump operations.
#[derive(Clone, Copy, Debug)]
pub enum Cond {
    Eq = 0x10,
    Gt = 0x20,
    Ne = 0x50,
    Lt = 0xa0,
}

#[derive(Clone, Copy, Debug)]
pub struct Label(usize);

/// An assembler-ish builder: emits instructions, resolves labels at the end.
#[derive(Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }

    fn emit(&mut self, code: u8, dst: Reg, src: Reg, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            regs: dst.0 | (src.0 << 4),
            off,
            imm,
        });
    }

    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Places `l` at the next instruction.
    pub fn bind(&mut self, l: Label) {
        if let Some(slot) = self.labels.get_mut(l.0) {
            *slot = Some(self.insns.len());
        }
    }

    pub fn mov64_reg(&mut self, dst: Reg, src: Reg) {
        self.emit(ALU64 | OP_MOV | X, dst, src, 0, 0);
    }
    pub fn mov32_reg(&mut self, dst: Reg, src: Reg) {
        self.emit(ALU | OP_MOV | X, dst, src, 0, 0);
    }
    pub fn mov64_imm(&mut self, dst: Reg, imm: i32) {
        self.emit(ALU64 | OP_MOV | K, dst, R0, 0, imm);
    }
    pub fn add64_imm(&mut self, dst: Reg, imm: i32) {
        self.emit(ALU64 | OP_ADD | K, dst, R0, 0, imm);
    }
    pub fn add64_reg(&mut self, dst: Reg, src: Reg) {
        self.emit(ALU64 | OP_ADD | X, dst, src, 0, 0);
    }
    /// 32-bit AND: the immediate is not sign-extended into a 64-bit value.
    pub fn and32_imm(&mut self, dst: Reg, imm: u32) {
        self.emit(ALU | OP_AND | K, dst, R0, 0, imm as i32);
    }
    pub fn lsh64_imm(&mut self, dst: Reg, imm: i32) {
        self.emit(ALU64 | OP_LSH | K, dst, R0, 0, imm);
    }
    /// `dst = *(size *)(src + off)`, zero-extended.
    pub fn ldx(&mut self, size: Size, dst: Reg, src: Reg, off: i16) {
        self.emit(LDX | MEM | size as u8, dst, src, off, 0);
    }
    /// 64-bit register compare (packet pointer bounds checks).
    pub fn jmp_reg(&mut self, cond: Cond, dst: Reg, src: Reg, to: Label) {
        self.fixups.push((self.insns.len(), to));
        self.emit(JMP | cond as u8 | X, dst, src, 0, 0);
    }
    /// 32-bit compare with an immediate: values loaded from the packet are
    /// compared as u32 with no sign extension of `imm`.
    pub fn jmp32_imm(&mut self, cond: Cond, dst: Reg, imm: u32, to: Label) {
        self.fixups.push((self.insns.len(), to));
        self.emit(JMP32 | cond as u8 | K, dst, R0, 0, imm as i32);
    }
    pub fn ja(&mut self, to: Label) {
        self.fixups.push((self.insns.len(), to));
        self.emit(JMP, R0, R0, 0, 0);
    }
    /// Loads a map fd; the kernel rewrites it to the map's address.
    pub fn ld_map_fd(&mut self, dst: Reg, fd: RawFd) {
        self.emit(LD | DW | IMM, dst, Reg(BPF_PSEUDO_MAP_FD), 0, fd);
        self.emit(0, R0, R0, 0, 0);
    }
    pub fn call(&mut self, helper: i32) {
        self.emit(JMP | OP_CALL, R0, R0, 0, helper);
    }
    pub fn exit(&mut self) {
        self.emit(JMP | OP_EXIT, R0, R0, 0, 0);
    }

    /// Whether any jump targets `l` (the verifier rejects unreachable code).
    pub fn is_used(&self, l: Label) -> bool {
        self.fixups.iter().any(|&(_, t)| t.0 == l.0)
    }

    /// Resolves jumps (offsets are relative to the next instruction).
    pub fn finish(mut self) -> Result<Vec<Insn>, BpfError> {
        for &(at, label) in &self.fixups {
            let target = self
                .labels
                .get(label.0)
                .copied()
                .flatten()
                .ok_or(BpfError::BadJump)?;
            let off = target as i64 - at as i64 - 1;
            let off = i16::try_from(off).map_err(|_| BpfError::BadJump)?;
            if let Some(insn) = self.insns.get_mut(at) {
                insn.off = off;
            }
        }
        Ok(self.insns)
    }
}

/// What the XDP program sends to the AF_XDP socket; everything else
/// (ARP, IKE on UDP 500, ICMP to the gateway, ...) goes to the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedirectRules {
    /// IP protocol 50 (ESP), IPv4 and IPv6.
    pub esp: bool,
    /// ESP-in-UDP destination port (RFC 3948: 4500). IKE messages on that
    /// port (non-ESP marker: four zero bytes) and NAT keepalives (one byte)
    /// still go to the kernel, where the IKE daemon listens.
    pub udp_encap_port: Option<u16>,
    /// Destination prefixes whose traffic the gateway protects (the remote
    /// LANs, on the LAN-facing port). Baked into the program.
    pub dst_prefixes: Vec<IpNet>,
}

// Offsets in an untagged Ethernet frame.
const ETH_LEN: i32 = 14;
const ETH_TYPE: i16 = 12;
const V4_PROTO: i16 = 14 + 9;
const V4_FRAG: i16 = 14 + 6;
const V4_DST: i16 = 14 + 16;
const V6_NEXT: i16 = 14 + 6;
const V6_DST: i16 = 14 + 24;
const V6_LEN: i32 = 40;
// `struct xdp_md` field offsets.
const MD_DATA: i16 = 0;
const MD_DATA_END: i16 = 4;
const MD_RX_QUEUE: i16 = 16;

/// A 16-bit network-order value as a native-order load from the packet sees it.
fn be16(v: u16) -> u32 {
    u32::from(u16::from_ne_bytes(v.to_be_bytes()))
}

/// Builds the steering program for `map_fd`.
pub fn redirect_program(map_fd: RawFd, rules: &RedirectRules) -> Result<Vec<Insn>, BpfError> {
    if rules.dst_prefixes.len() > MAX_PREFIXES {
        return Err(BpfError::TooManyPrefixes {
            count: rules.dst_prefixes.len(),
        });
    }
    let mut a = Asm::new();
    let pass = a.label();
    let redirect = a.label();
    let v4 = a.label();
    let v6 = a.label();
    let v4_dst = a.label();
    let v6_dst = a.label();

    // r6 = ctx survives until the helper call; r2/r3 = packet start/end.
    a.mov64_reg(R6, R1);
    a.ldx(Size::W, R2, R6, MD_DATA);
    a.ldx(Size::W, R3, R6, MD_DATA_END);

    // Ethernet: only untagged IPv4/IPv6 are ours; ARP, VLANs, LLDP pass.
    a.mov64_reg(R4, R2);
    a.add64_imm(R4, ETH_LEN);
    a.jmp_reg(Cond::Gt, R4, R3, pass);
    a.ldx(Size::H, R5, R2, ETH_TYPE);
    a.jmp32_imm(Cond::Eq, R5, be16(0x0800), v4);
    a.jmp32_imm(Cond::Eq, R5, be16(0x86dd), v6);
    a.ja(pass);

    // IPv4: the fixed 20-byte header must be there before any field is read.
    a.bind(v4);
    a.mov64_reg(R4, R2);
    a.add64_imm(R4, ETH_LEN + 20);
    a.jmp_reg(Cond::Gt, R4, R3, pass);
    a.ldx(Size::B, R5, R2, V4_PROTO);
    if rules.esp {
        a.jmp32_imm(Cond::Eq, R5, 50, redirect);
    }
    if let Some(port) = rules.udp_encap_port {
        a.jmp32_imm(Cond::Ne, R5, 17, v4_dst);
        // Non-first fragments carry no UDP header: judge them by address.
        a.ldx(Size::H, R7, R2, V4_FRAG);
        a.and32_imm(R7, be16(0x1fff));
        a.jmp32_imm(Cond::Ne, R7, 0, v4_dst);
        // The UDP header follows the options: r4 = data + 14 + ihl*4, with
        // ihl*4 ≤ 60 so the verifier can bound the variable offset.
        a.ldx(Size::B, R7, R2, 14);
        a.and32_imm(R7, 0x0f);
        a.lsh64_imm(R7, 2);
        a.jmp32_imm(Cond::Lt, R7, 20, pass);
        a.mov64_reg(R4, R2);
        a.add64_imm(R4, ETH_LEN);
        a.add64_reg(R4, R7);
        udp_encap_check(&mut a, R4, port, v4_dst, pass, redirect);
    }
    a.bind(v4_dst);
    a.ldx(Size::W, R5, R2, V4_DST);
    for net in &rules.dst_prefixes {
        if let IpNet::V4(n) = net {
            // One word: (dst & mask) == network.
            let mask = u32::from_ne_bytes(n.netmask().octets());
            let addr = u32::from_ne_bytes(n.network().octets());
            a.mov32_reg(R7, R5);
            a.and32_imm(R7, mask);
            a.jmp32_imm(Cond::Eq, R7, addr, redirect);
        }
    }
    a.ja(pass);

    // IPv6: extension headers are not walked; ESP and UDP must be the
    // first next header (what IKE peers send), otherwise judged by address.
    a.bind(v6);
    a.mov64_reg(R4, R2);
    a.add64_imm(R4, ETH_LEN + V6_LEN);
    a.jmp_reg(Cond::Gt, R4, R3, pass);
    a.ldx(Size::B, R5, R2, V6_NEXT);
    if rules.esp {
        a.jmp32_imm(Cond::Eq, R5, 50, redirect);
    }
    if let Some(port) = rules.udp_encap_port {
        a.jmp32_imm(Cond::Ne, R5, 17, v6_dst);
        a.mov64_reg(R4, R2);
        a.add64_imm(R4, ETH_LEN + V6_LEN);
        udp_encap_check(&mut a, R4, port, v6_dst, pass, redirect);
    }
    a.bind(v6_dst);
    for net in &rules.dst_prefixes {
        if let IpNet::V6(n) = net {
            // Up to four words; a prefix fails at its first differing word.
            let next = a.label();
            let mask = n.netmask().octets();
            let addr = n.network().octets();
            for w in 0..4 {
                let m: [u8; 4] = [
                    mask[4 * w],
                    mask[4 * w + 1],
                    mask[4 * w + 2],
                    mask[4 * w + 3],
                ];
                if m == [0; 4] {
                    break;
                }
                let v: [u8; 4] = [
                    addr[4 * w],
                    addr[4 * w + 1],
                    addr[4 * w + 2],
                    addr[4 * w + 3],
                ];
                a.ldx(Size::W, R5, R2, V6_DST + 4 * w as i16);
                a.and32_imm(R5, u32::from_ne_bytes(m));
                a.jmp32_imm(Cond::Ne, R5, u32::from_ne_bytes(v), next);
            }
            a.ja(redirect);
            a.bind(next);
        }
    }
    a.ja(pass);

    // Redirect to the socket of the queue the packet came in on; with no
    // socket on that queue the helper returns XDP_PASS (its flags' low bits).
    // (Left out when no rule redirects: the verifier refuses dead code.)
    if a.is_used(redirect) {
        a.bind(redirect);
        a.ldx(Size::W, R2, R6, MD_RX_QUEUE);
        a.ld_map_fd(R1, map_fd);
        a.mov64_imm(R3, XDP_PASS);
        a.call(HELPER_REDIRECT_MAP);
        a.exit();
    }

    a.bind(pass);
    a.mov64_imm(R0, XDP_PASS);
    a.exit();
    a.finish()
}

/// `udp` points at a UDP header (bounds not yet checked). Not our port →
/// `other`; IKE (zero non-ESP marker) or a keepalive → `pass`; ESP → `redirect`.
fn udp_encap_check(a: &mut Asm, udp: Reg, port: u16, other: Label, pass: Label, redirect: Label) {
    a.mov64_reg(R8, udp);
    a.add64_imm(R8, 8);
    a.jmp_reg(Cond::Gt, R8, R3, other);
    a.ldx(Size::H, R5, udp, 2);
    a.jmp32_imm(Cond::Ne, R5, be16(port), other);
    // Shorter than a 4-byte marker: a NAT keepalive (RFC 3948 §2.3).
    a.mov64_reg(R8, udp);
    a.add64_imm(R8, 12);
    a.jmp_reg(Cond::Gt, R8, R3, pass);
    // RFC 3948 §2.2: SPI 0 is the non-ESP marker of IKE.
    a.ldx(Size::W, R5, udp, 8);
    a.jmp32_imm(Cond::Eq, R5, 0, pass);
    a.ja(redirect);
}

/// A loaded XDP program.
#[derive(Debug)]
pub struct XdpProgram {
    fd: OwnedFd,
}

#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

const LOG_SIZE: usize = 256 * 1024;

impl XdpProgram {
    /// Loads `insns`; on rejection loads again with the verifier log on and
    /// returns that log in the error.
    pub fn load(insns: &[Insn]) -> Result<XdpProgram, BpfError> {
        Self::load_with_log(insns, &mut []).or_else(|first| {
            let mut log = vec![0u8; LOG_SIZE];
            match Self::load_with_log(insns, &mut log) {
                Ok(p) => Ok(p),
                Err(BpfError::Syscall { source, .. }) => {
                    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                    Err(BpfError::Verifier {
                        source,
                        log: String::from_utf8_lossy(&log[..end]).into_owned(),
                    })
                }
                Err(_) => Err(first),
            }
        })
    }

    fn load_with_log(insns: &[Insn], log: &mut [u8]) -> Result<XdpProgram, BpfError> {
        let license = b"GPL\0";
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            kern_version: 0,
            prog_flags: 0,
            prog_name: name16("espgate_xdp"),
            prog_ifindex: 0,
            expected_attach_type: BPF_XDP,
        };
        let fd = sys_bpf(BPF_PROG_LOAD, &mut attr).map_err(|source| BpfError::Syscall {
            what: "PROG_LOAD",
            source,
        })?;
        Ok(XdpProgram { fd: owned(fd) })
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// An attached program. With a BPF link the kernel detaches when the fd
/// closes (also on crash); with the netlink fallback `Drop` detaches.
#[derive(Debug)]
pub struct XdpAttachment {
    how: Attached,
    ifindex: u32,
    mode: AttachMode,
}

#[derive(Debug)]
enum Attached {
    Link(#[allow(dead_code)] OwnedFd),
    Netlink,
}

impl XdpAttachment {
    /// Attaches `prog` to `ifindex` in `mode`: a BPF link first, netlink if
    /// the kernel has no XDP links (EINVAL/ENOSYS-like answers).
    pub fn attach(
        prog: &XdpProgram,
        ifindex: u32,
        mode: AttachMode,
    ) -> Result<XdpAttachment, BpfError> {
        match Self::link(prog, ifindex, mode) {
            Ok(fd) => Ok(XdpAttachment {
                how: Attached::Link(fd),
                ifindex,
                mode,
            }),
            Err(e) if link_unsupported(&e) => {
                netlink::set_xdp(
                    ifindex,
                    prog.as_raw_fd(),
                    mode.flags() | XDP_FLAGS_UPDATE_IF_NOEXIST,
                )
                .map_err(BpfError::Netlink)?;
                Ok(XdpAttachment {
                    how: Attached::Netlink,
                    ifindex,
                    mode,
                })
            }
            Err(source) => Err(BpfError::Syscall {
                what: "LINK_CREATE xdp",
                source,
            }),
        }
    }

    /// Attaches with the netlink API only (tests the fallback path).
    pub fn attach_netlink(
        prog: &XdpProgram,
        ifindex: u32,
        mode: AttachMode,
    ) -> Result<XdpAttachment, BpfError> {
        netlink::set_xdp(
            ifindex,
            prog.as_raw_fd(),
            mode.flags() | XDP_FLAGS_UPDATE_IF_NOEXIST,
        )
        .map_err(BpfError::Netlink)?;
        Ok(XdpAttachment {
            how: Attached::Netlink,
            ifindex,
            mode,
        })
    }

    fn link(prog: &XdpProgram, ifindex: u32, mode: AttachMode) -> io::Result<OwnedFd> {
        let mut attr = LinkCreateAttr {
            prog_fd: prog.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags: mode.flags(),
        };
        sys_bpf(BPF_LINK_CREATE, &mut attr).map(owned)
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    pub fn is_link(&self) -> bool {
        matches!(self.how, Attached::Link(_))
    }
}

/// Kernels before 5.9 know no XDP links: they answer EINVAL (unknown attach
/// type) or, older still, E2BIG/ENOSYS for the unknown command.
fn link_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::E2BIG)
    )
}

impl Drop for XdpAttachment {
    fn drop(&mut self) {
        if let Attached::Netlink = self.how {
            // fd -1 detaches whatever program runs in this mode.
            let _ = netlink::set_xdp(self.ifindex, -1, self.mode.flags());
        }
    }
}

/// `RTM_SETLINK` with a nested `IFLA_XDP { FD, FLAGS }` (the pre-link API).
mod netlink {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    const RTM_SETLINK: u16 = 19;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_ACK: u16 = 4;
    const NLMSG_ERROR: u16 = 2;
    const IFLA_XDP: u16 = 43;
    const NLA_F_NESTED: u16 = 1 << 15;
    const IFLA_XDP_FD: u16 = 1;
    const IFLA_XDP_FLAGS: u16 = 3;

    fn push_attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        buf.extend_from_slice(&(len as u16).to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(payload);
        while !buf.len().is_multiple_of(4) {
            buf.push(0);
        }
    }

    pub fn set_xdp(ifindex: u32, prog_fd: RawFd, flags: u32) -> io::Result<()> {
        // nlmsghdr (16) + ifinfomsg (16) + attributes.
        let mut msg = vec![0u8; 32];
        msg[16] = libc::AF_UNSPEC as u8;
        msg[20..24].copy_from_slice(&(ifindex as i32).to_ne_bytes());
        let mut nested = Vec::new();
        push_attr(&mut nested, IFLA_XDP_FD, &prog_fd.to_ne_bytes());
        push_attr(&mut nested, IFLA_XDP_FLAGS, &flags.to_ne_bytes());
        push_attr(&mut msg, IFLA_XDP | NLA_F_NESTED, &nested);
        let len = msg.len() as u32;
        msg[0..4].copy_from_slice(&len.to_ne_bytes());
        msg[4..6].copy_from_slice(&RTM_SETLINK.to_ne_bytes());
        msg[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        msg[8..12].copy_from_slice(&1u32.to_ne_bytes());

        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `msg` is valid for `msg.len()` bytes during the call; a
        // null address sends to the kernel (the socket's default peer).
        let sent = unsafe {
            libc::send(
                sock.as_raw_fd(),
                msg.as_ptr() as *const libc::c_void,
                msg.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut reply = [0u8; 4096];
        // SAFETY: `reply` is writable for its length during the call.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                reply.as_mut_ptr() as *mut libc::c_void,
                reply.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n >= 20 && u16::from_ne_bytes([reply[4], reply[5]]) == NLMSG_ERROR {
            let err = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
            if err != 0 {
                return Err(io::Error::from_raw_os_error(-err));
            }
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected netlink reply",
        ))
    }
}

#[repr(C)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
}

const BPF_PROG_TEST_RUN: u32 = 10;

/// Runs `prog` once on `frame` in the kernel (`BPF_PROG_TEST_RUN`, rx queue
/// 0) and returns its verdict: lets tests check the steering decisions
/// without sending traffic.
pub fn test_run(prog: &XdpProgram, frame: &[u8]) -> io::Result<u32> {
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        retval: 0,
        data_size_in: frame.len() as u32,
        data_size_out: 0,
        data_in: frame.as_ptr() as u64,
        data_out: 0,
        repeat: 1,
        duration: 0,
    };
    sys_bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(attr.retval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_resolve_relative_to_next_insn() {
        let mut a = Asm::new();
        let l = a.label();
        a.ja(l); // 0
        a.mov64_imm(R0, 1); // 1
        a.bind(l);
        a.exit(); // 2
        let p = a.finish().unwrap();
        assert_eq!(p[0].off, 1);
        assert_eq!(p[2].code, 0x95);
    }

    #[test]
    fn unbound_label_is_an_error() {
        let mut a = Asm::new();
        let l = a.label();
        a.ja(l);
        assert!(matches!(a.finish(), Err(BpfError::BadJump)));
    }

    #[test]
    fn ld_imm64_takes_two_slots_and_marks_map_fd() {
        let mut a = Asm::new();
        a.ld_map_fd(R1, 7);
        let p = a.finish().unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].code, 0x18);
        assert_eq!(p[0].regs, 0x11);
        assert_eq!(p[0].imm, 7);
    }

    #[test]
    fn program_builds_with_many_prefixes_and_rejects_too_many() {
        let rules = RedirectRules {
            esp: true,
            udp_encap_port: Some(4500),
            dst_prefixes: vec![
                "172.16.10.0/24".parse().unwrap(),
                "fd00:1::/64".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ],
        };
        let p = redirect_program(3, &rules).unwrap();
        assert!(p.len() > 40);
        let too_many = RedirectRules {
            dst_prefixes: vec!["10.0.0.0/8".parse().unwrap(); MAX_PREFIXES + 1],
            ..rules
        };
        assert!(matches!(
            redirect_program(3, &too_many),
            Err(BpfError::TooManyPrefixes { .. })
        ));
    }

    #[test]
    fn network_order_constants_match_packet_loads() {
        // A native-order load of the bytes 0x11 0x94 (port 4500) on the wire.
        assert_eq!(be16(4500), u32::from(u16::from_ne_bytes([0x11, 0x94])));
    }
}
