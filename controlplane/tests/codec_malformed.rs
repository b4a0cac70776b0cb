//! Malformed input: each defect gives its own named `DecodeError`, and the
//! error maps to the Notify the peer should get.

use std::net::Ipv4Addr;

use espgate_controlplane::error::DecodeError;
use espgate_controlplane::ike::message::decode_inner;
use espgate_controlplane::ike::payload::*;
use espgate_controlplane::ike::{Flags, Header, Message};

fn msg(payloads: Vec<Payload>) -> Vec<u8> {
    Message {
        header: Header::new(
            ExchangeType::IKE_SA_INIT,
            [1; 8],
            [0; 8],
            0,
            Flags::INITIATOR,
        ),
        payloads,
    }
    .encode()
}

/// Sets the IKE header length to the buffer length (after an edit that
/// changed the size).
fn fix_len(b: &mut [u8]) {
    let n = b.len() as u32;
    b[24..28].copy_from_slice(&n.to_be_bytes());
}

fn sa() -> Payload {
    Payload::Sa(SaPayload {
        proposals: vec![Proposal {
            num: 1,
            protocol: ProtocolId::IKE,
            spi: vec![],
            transforms: vec![
                Transform::new(TransformType::ENCR, TransformId::ENCR_AES_CBC).with_key_len(256),
                Transform::new(TransformType::DH, TransformId::MODP_2048),
            ],
        }],
    })
}

// Offsets in msg(vec![sa()]): header 0..28, SA generic header 28..32,
// proposal 32..40 (+ transforms), transform 1 at 40..52 (with KEY_LENGTH),
// transform 2 at 52..60.
const SA: usize = 28;
const PROP: usize = 32;
const T1: usize = 40;
const T2: usize = 52;

#[test]
fn layout_assumed_by_these_tests() {
    let b = msg(vec![sa()]);
    assert_eq!(b.len(), 60);
    assert_eq!(&b[SA..SA + 4], &[0, 0, 0, 32]);
    assert_eq!(&b[PROP..PROP + 8], &[0, 0, 0, 28, 1, 1, 0, 2]);
    assert_eq!(&b[T1..T1 + 4], &[3, 0, 0, 12]);
    assert_eq!(&b[T2..T2 + 4], &[0, 0, 0, 8]);
}

#[test]
fn truncated_header() {
    let b = msg(vec![]);
    for n in 0..28 {
        assert_eq!(
            Message::decode(&b[..n]),
            Err(DecodeError::TooShort { what: "IKE header" })
        );
    }
}

#[test]
fn bad_version() {
    let mut b = msg(vec![]);
    b[17] = 0x10;
    assert_eq!(Message::decode(&b), Err(DecodeError::BadVersion(0x10)));
    b[17] = 0x30;
    let e = Message::decode(&b).unwrap_err();
    assert_eq!(e, DecodeError::BadVersion(0x30));
    assert_eq!(NotifyType::from(&e), NotifyType::INVALID_MAJOR_VERSION);
    // A minor version bump is accepted (RFC 7296 §2.5).
    b[17] = 0x21;
    assert!(Message::decode(&b).is_ok());
    // Peeking works even for a wrong version, so a responder can answer.
    b[17] = 0x30;
    assert_eq!(Header::peek(&b).unwrap().header.spi_i, [1; 8]);
}

#[test]
fn header_length_mismatch() {
    let mut b = msg(vec![sa()]);
    b.push(0);
    assert_eq!(
        Message::decode(&b),
        Err(DecodeError::BadMessageLength {
            header: 60,
            actual: 61
        })
    );
    b.truncate(59);
    assert_eq!(
        Message::decode(&b),
        Err(DecodeError::BadMessageLength {
            header: 60,
            actual: 59
        })
    );
}

#[test]
fn truncated_message_at_every_length() {
    let full = msg(vec![
        sa(),
        Payload::Ke(KePayload {
            group: 14,
            data: vec![5; 8],
        }),
        Payload::Nonce(Nonce(vec![1; 16])),
    ]);
    for n in 28..full.len() {
        let mut b = full[..n].to_vec();
        fix_len(&mut b);
        assert!(Message::decode(&b).is_err(), "length {n} accepted");
    }
}

#[test]
fn payload_length_past_end() {
    let mut b = msg(vec![sa()]);
    b[SA + 3] = 33;
    assert_eq!(
        Message::decode(&b),
        Err(DecodeError::BadLength {
            payload: PayloadType::SA
        })
    );
}

#[test]
fn payload_length_below_header() {
    let mut b = msg(vec![Payload::Nonce(Nonce(vec![1; 16]))]);
    for len in 0..4 {
        b[SA + 3] = len;
        assert_eq!(
            Message::decode(&b),
            Err(DecodeError::BadLength {
                payload: PayloadType::Nonce
            })
        );
    }
}

#[test]
fn proposal_length_errors() {
    let mut b = msg(vec![sa()]);
    b[PROP + 3] = 29; // past the SA payload
    assert_eq!(
        Message::decode(&b),
        Err(DecodeError::BadSubstructureLength { what: "proposal" })
    );
    b[PROP + 3] = 3; // below the substructure header
    assert_eq!(
        Message::decode(&b),
        Err(DecodeError::BadSubstructureLength { what: "proposal" })
    );
    b[PROP + 3] = 6; // inside the proposal header
    assert_eq!(
        Message::decode(&b),
        Err(DecodeError::TooShort { what: "proposal" })
    );
}

#[test]
fn transform_length_errors() {
    let mut b = msg(vec![sa()]);
    b[T2 + 3] = 9;
    assert_eq!(
        Message::decode(&b),
        Err(DecodeError::BadSubstructureLength { what: "transform" })
    );
    b[T2 + 3] = 2;
    assert_eq!(
        Message::decode(&b),
        Err(DecodeError::BadSubstructureLength { what: "transform" })
    );
    // Shorter transform: its KEY_LENGTH attribute is cut in half.
    let mut b = msg(vec![sa()]);
    b[T1 + 3] = 10;
    assert!(matches!(
        Message::decode(&b),
        Err(DecodeError::TooShort {
            what: "transform attribute"
        })
    ));
}

#[test]
fn transform_count_and_last_markers() {
    let mut b = msg(vec![sa()]);
    b[PROP + 7] = 3;
    assert_eq!(
        Message::decode(&b),
        Err(DecodeError::CountMismatch { what: "transform" })
    );
    let mut b = msg(vec![sa()]);
    b[T1] = 0; // says "last" but another follows
    assert_eq!(
        Message::decode(&b),
        Err(DecodeError::BadLastSubstructure { what: "transform" })
    );
    let mut b = msg(vec![sa()]);
    b[PROP] = 2; // says "more proposals" but none follows
    assert_eq!(
        Message::decode(&b),
        Err(DecodeError::BadLastSubstructure { what: "proposal" })
    );
}

#[test]
fn key_length_attribute_errors() {
    let mut b = msg(vec![sa()]);
    b[T1 + 8] &= 0x7f; // TLV form: the value 256 becomes a length past the end
    assert_eq!(
        Message::decode(&b),
        Err(DecodeError::BadSubstructureLength {
            what: "transform attribute"
        })
    );
    // KEY_LENGTH in TLV form with a proper length.
    let mut b = msg(vec![sa()]);
    b.splice(T1 + 8..T1 + 12, [0, 14, 0, 2, 1, 0]);
    b[T1 + 3] += 2;
    b[PROP + 3] += 2;
    b[SA + 3] += 2;
    fix_len(&mut b);
    assert_eq!(Message::decode(&b), Err(DecodeError::BadAttribute(14)));
    // Two KEY_LENGTH attributes.
    let mut b = msg(vec![sa()]);
    b.splice(T1 + 12..T1 + 12, [0x80, 14, 0, 128]);
    b[T1 + 3] += 4;
    b[PROP + 3] += 4;
    b[SA + 3] += 4;
    fix_len(&mut b);
    assert_eq!(Message::decode(&b), Err(DecodeError::BadAttribute(14)));
}

#[test]
fn empty_sa_and_ts() {
    let b = msg(vec![Payload::Sa(SaPayload { proposals: vec![] })]);
    assert_eq!(Message::decode(&b), Err(DecodeError::Empty("SA payload")));
    let b = msg(vec![Payload::TsI(TsPayload { selectors: vec![] })]);
    assert_eq!(Message::decode(&b), Err(DecodeError::Empty("TS payload")));
}

fn ts() -> Payload {
    Payload::TsI(TsPayload {
        selectors: vec![TrafficSelector {
            ip_proto: 0,
            start_port: 0,
            end_port: 65535,
            addrs: AddrRange::V4(Ipv4Addr::new(10, 0, 0, 0), Ipv4Addr::new(10, 0, 0, 255)),
        }],
    })
}

#[test]
fn traffic_selector_errors() {
    // TS payload body: count(1) reserved(3) then the selector at 36.
    let mut b = msg(vec![ts()]);
    b[36] = 9;
    let e = Message::decode(&b).unwrap_err();
    assert_eq!(e, DecodeError::BadTsType(9));
    assert_eq!(NotifyType::from(&e), NotifyType::INVALID_SYNTAX);
    let mut b = msg(vec![ts()]);
    b[36] = 8; // IPv6 type with an IPv4-sized selector
    assert_eq!(
        Message::decode(&b),
        Err(DecodeError::BadSubstructureLength {
            what: "traffic selector"
        })
    );
    let mut b = msg(vec![ts()]);
    b[32] = 2;
    assert_eq!(
        Message::decode(&b),
        Err(DecodeError::CountMismatch {
            what: "traffic selector"
        })
    );
}

#[test]
fn unknown_payloads() {
    let unknown = |critical| Payload::Unknown {
        ptype: PayloadType(200),
        critical,
        body: vec![1, 2, 3],
    };
    let b = msg(vec![unknown(false), Payload::Nonce(Nonce(vec![1; 16]))]);
    let m = Message::decode(&b).unwrap();
    assert_eq!(m.payloads[0], unknown(false));
    assert_eq!(m.payloads[1], Payload::Nonce(Nonce(vec![1; 16])));

    let b = msg(vec![Payload::Nonce(Nonce(vec![1; 16])), unknown(true)]);
    let e = Message::decode(&b).unwrap_err();
    assert_eq!(e, DecodeError::UnknownCritical(200));
    assert_eq!(
        NotifyType::from(&e),
        NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD
    );

    // The critical bit on a known payload type is ignored (RFC 7296 §3.2).
    let mut b = msg(vec![Payload::Nonce(Nonce(vec![1; 16]))]);
    b[SA + 1] = 0x80;
    assert!(Message::decode(&b).is_ok());
}

#[test]
fn sk_must_be_last() {
    let sk = Payload::Encrypted(Encrypted {
        first_inner: PayloadType::IDi,
        body: vec![0; 48],
    });
    // Bytes after the SK payload are an error whatever its Next Payload says.
    let mut b = msg(vec![sk]);
    b.extend_from_slice(&[0, 0, 0, 4]);
    fix_len(&mut b);
    assert_eq!(Message::decode(&b), Err(DecodeError::SkNotLast));
}

#[test]
fn trailing_bytes_after_chain() {
    let mut b = msg(vec![Payload::Nonce(Nonce(vec![1; 16]))]);
    b[SA + 3] -= 4;
    assert_eq!(
        Message::decode(&b),
        Err(DecodeError::Trailing("payload chain"))
    );
}

#[test]
fn delete_and_notify_errors() {
    let b = msg(vec![Payload::Delete(Delete::esp(&[1, 2]))]);
    let mut c = b.clone();
    c[35] = 3; // three SPIs announced, two present
    assert_eq!(
        Message::decode(&c),
        Err(DecodeError::CountMismatch { what: "Delete SPI" })
    );
    let mut c = b.clone();
    c[33] = 0; // SPI size 0 with SPIs
    assert_eq!(
        Message::decode(&c),
        Err(DecodeError::BadSpiSize {
            what: "Delete payload",
            size: 0
        })
    );
    let mut b = msg(vec![Payload::Notify(Notify::new(
        NotifyType::COOKIE,
        vec![],
    ))]);
    b[33] = 4; // SPI size past the end of the payload
    assert_eq!(
        Message::decode(&b),
        Err(DecodeError::TooShort { what: "Notify SPI" })
    );
}

#[test]
fn short_fixed_payload_bodies() {
    for (ptype, what) in [
        (PayloadType::KE, "KE payload"),
        (PayloadType::IDi, "ID payload"),
        (PayloadType::AUTH, "AUTH payload"),
        (PayloadType::Notify, "Notify payload"),
        (PayloadType::Delete, "Delete payload"),
        (PayloadType::TSr, "TS payload"),
    ] {
        let mut b = msg(vec![]);
        b[16] = ptype.0;
        b.extend_from_slice(&[0, 0, 0, 6, 1, 1]);
        fix_len(&mut b);
        assert_eq!(
            Message::decode(&b),
            Err(DecodeError::TooShort { what }),
            "{ptype:?}"
        );
    }
}

#[test]
fn inner_chain_errors() {
    // Pad length longer than the plaintext.
    assert_eq!(
        decode_inner(PayloadType::NONE, &[5]),
        Err(DecodeError::BadPadding)
    );
    // Inner chain that announces a payload that is not there.
    assert_eq!(
        decode_inner(PayloadType::IDi, &[0]),
        Err(DecodeError::TooShort {
            what: "generic payload header"
        })
    );
    // Nested SK.
    assert_eq!(
        decode_inner(PayloadType::SK, &[0, 0, 0, 4, 0]),
        Err(DecodeError::NestedSk)
    );
}

#[test]
fn sk_layout_rejects_bad_lengths() {
    let sk = |n| {
        Payload::Encrypted(Encrypted {
            first_inner: PayloadType::IDi,
            body: vec![0; n],
        })
    };
    for (n, ok) in [
        (31, false),
        (32, false),
        (33, false),
        (48, true),
        (47, false),
    ] {
        let b = msg(vec![sk(n)]);
        let m = Message::decode(&b).unwrap();
        assert_eq!(m.sk_layout(b.len(), 16, 16, 16).is_ok(), ok, "body {n}");
    }
    let m = Message::decode(&msg(vec![])).unwrap();
    assert_eq!(m.sk_layout(28, 16, 16, 16), Err(DecodeError::BadSkLength));
}
