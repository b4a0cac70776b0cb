//! Encode → decode round trips for every payload and for whole messages,
//! including SK sealing/opening with a toy cipher.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use espgate_controlplane::error::DecodeError;
use espgate_controlplane::ike::message::{
    classify_udp4500, decode_inner, sk_associated_data_len, with_non_esp_marker, Udp4500,
};
use espgate_controlplane::ike::payload::*;
use espgate_controlplane::ike::{
    Flags, Header, Message, SkLayout, SkOpenError, SkOpener, SkSealer,
};

fn sa_init_proposal() -> SaPayload {
    SaPayload {
        proposals: vec![Proposal {
            num: 1,
            protocol: ProtocolId::IKE,
            spi: vec![],
            transforms: vec![
                Transform::new(TransformType::ENCR, TransformId::ENCR_AES_CBC).with_key_len(256),
                Transform::new(TransformType::PRF, TransformId::PRF_HMAC_SHA2_256),
                Transform::new(TransformType::INTEG, TransformId::AUTH_HMAC_SHA2_256_128),
                Transform::new(TransformType::DH, TransformId::MODP_2048),
            ],
        }],
    }
}

fn esp_proposals() -> SaPayload {
    SaPayload {
        proposals: vec![
            Proposal {
                num: 1,
                protocol: ProtocolId::ESP,
                spi: vec![0xc0, 0x00, 0x10, 0x01],
                transforms: vec![
                    Transform::new(TransformType::ENCR, TransformId::ENCR_AES_CBC)
                        .with_key_len(256),
                    Transform::new(TransformType::INTEG, TransformId::AUTH_HMAC_SHA2_256_128),
                    Transform::new(TransformType::ESN, TransformId::ESN_NO),
                ],
            },
            Proposal {
                num: 2,
                protocol: ProtocolId::ESP,
                spi: vec![0xc0, 0x00, 0x10, 0x01],
                transforms: vec![
                    Transform::new(TransformType::ENCR, TransformId::ENCR_AES_GCM_16)
                        .with_key_len(256),
                    Transform {
                        ttype: TransformType::ESN,
                        id: TransformId::ESN_NO,
                        key_len: None,
                        other_attrs: vec![
                            Attribute {
                                atype: 99,
                                value: AttributeValue::Tv(7),
                            },
                            Attribute {
                                atype: 100,
                                value: AttributeValue::Tlv(vec![1, 2, 3]),
                            },
                        ],
                    },
                ],
            },
        ],
    }
}

fn ts_v4() -> TsPayload {
    TsPayload {
        selectors: vec![TrafficSelector {
            ip_proto: 0,
            start_port: 0,
            end_port: 65535,
            addrs: AddrRange::V4(Ipv4Addr::new(10, 1, 0, 0), Ipv4Addr::new(10, 1, 0, 255)),
        }],
    }
}

fn ts_mixed() -> TsPayload {
    TsPayload {
        selectors: vec![
            TrafficSelector {
                ip_proto: 6,
                start_port: 443,
                end_port: 443,
                addrs: AddrRange::V4(Ipv4Addr::new(192, 168, 1, 1), Ipv4Addr::new(192, 168, 1, 9)),
            },
            TrafficSelector {
                ip_proto: 17,
                start_port: 0,
                end_port: 65535,
                addrs: AddrRange::V6(
                    "2001:db8::".parse().unwrap(),
                    "2001:db8::ffff".parse::<Ipv6Addr>().unwrap(),
                ),
            },
        ],
    }
}

fn every_payload() -> Vec<Payload> {
    vec![
        Payload::Sa(sa_init_proposal()),
        Payload::Sa(esp_proposals()),
        Payload::Ke(KePayload {
            group: 14,
            data: (0..=255).collect(),
        }),
        Payload::Nonce(Nonce(vec![7; 32])),
        Payload::IdI(IdPayload::from_addr(IpAddr::V4(Ipv4Addr::new(
            192, 0, 2, 1,
        )))),
        Payload::IdR(IdPayload {
            id_type: IdType::ID_FQDN,
            data: b"gw.example".to_vec(),
        }),
        Payload::Cert(CertPayload {
            encoding: 4,
            data: vec![1, 2],
        }),
        Payload::CertReq(CertPayload {
            encoding: 4,
            data: vec![],
        }),
        Payload::Auth(AuthPayload {
            method: AuthMethod::SHARED_KEY_MIC,
            data: vec![0xab; 32],
        }),
        Payload::Notify(Notify::new(
            NotifyType::NAT_DETECTION_SOURCE_IP,
            vec![1; 20],
        )),
        Payload::Notify(Notify::new(NotifyType::INITIAL_CONTACT, vec![])),
        Payload::Notify(Notify::child(
            ProtocolId::ESP,
            0xc000_1001,
            NotifyType::REKEY_SA,
            vec![],
        )),
        Payload::Notify(Notify::new(NotifyType(0x1234), vec![9])),
        Payload::Delete(Delete::ike()),
        Payload::Delete(Delete::esp(&[1, 0xdead_beef])),
        Payload::VendorId(VendorId(b"espgate".to_vec())),
        Payload::TsI(ts_v4()),
        Payload::TsR(ts_mixed()),
        Payload::Unknown {
            ptype: PayloadType(200),
            critical: false,
            body: vec![1, 2, 3, 4, 5],
        },
    ]
}

fn header(exchange: ExchangeType, flags: Flags) -> Header {
    Header::new(exchange, [1, 2, 3, 4, 5, 6, 7, 8], [0; 8], 0, flags)
}

#[test]
fn each_payload_round_trips_alone() {
    for p in every_payload() {
        let m = Message {
            header: header(ExchangeType::IKE_SA_INIT, Flags::INITIATOR),
            payloads: vec![p.clone()],
        };
        let bytes = m.encode();
        assert_eq!(
            u32::from_be_bytes(bytes[24..28].try_into().unwrap()) as usize,
            bytes.len()
        );
        assert_eq!(bytes[16], p.ptype().0, "header next payload");
        assert_eq!(Message::decode(&bytes), Ok(m), "{p:?}");
    }
}

#[test]
fn whole_message_round_trips() {
    let m = Message {
        header: Header::new(
            ExchangeType::CREATE_CHILD_SA,
            [9; 8],
            [8; 8],
            0xfeed_f00d,
            Flags::RESPONSE,
        ),
        payloads: every_payload(),
    };
    let bytes = m.encode();
    let back = Message::decode(&bytes).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.encode(), bytes);
    assert!(back.header.is_response() && !back.header.is_initiator());
    assert!(m.notify(NotifyType::INITIAL_CONTACT).is_some());
    assert!(m.notify(NotifyType::COOKIE).is_none());
}

#[test]
fn empty_message_round_trips() {
    let m = Message {
        header: header(ExchangeType::INFORMATIONAL, Flags::RESPONSE),
        payloads: vec![],
    };
    let bytes = m.encode();
    assert_eq!(bytes.len(), 28);
    assert_eq!(bytes[16], 0);
    assert_eq!(Message::decode(&bytes), Ok(m));
}

/// Toy cipher for layout tests: XOR with a byte, ICV = sum of covered bytes.
struct Toy {
    key: u8,
    block: usize,
    iv: usize,
    icv: usize,
    seen_layout: Option<SkLayout>,
}

impl Toy {
    fn sum(data: &[u8], n: usize) -> Vec<u8> {
        let s: u64 = data
            .iter()
            .enumerate()
            .map(|(i, &b)| (i as u64 + 1) * b as u64)
            .sum();
        (0..n)
            .map(|i| (s >> (8 * (i % 8))) as u8 ^ i as u8)
            .collect()
    }
}

#[derive(Debug, PartialEq)]
struct BadIcv;

impl SkSealer for Toy {
    type Error = BadIcv;
    fn iv_len(&self) -> usize {
        self.iv
    }
    fn icv_len(&self) -> usize {
        self.icv
    }
    fn block_len(&self) -> usize {
        self.block
    }
    fn seal(&mut self, msg: &mut [u8], l: &SkLayout) -> Result<(), BadIcv> {
        // Everything the ICV covers must already be final.
        assert_eq!(
            u32::from_be_bytes(msg[24..28].try_into().unwrap()) as usize,
            msg.len()
        );
        assert!(msg[l.icv()].iter().all(|&b| b == 0));
        assert!(msg[l.iv()].iter().all(|&b| b == 0));
        assert_eq!(l.ciphertext().len() % self.block, 0);
        msg[l.iv()].fill(0x11);
        for b in &mut msg[l.ciphertext()] {
            *b ^= self.key;
        }
        let icv = Toy::sum(&msg[l.integrity_covered()], self.icv);
        msg[l.icv()].copy_from_slice(&icv);
        self.seen_layout = Some(*l);
        Ok(())
    }
}

impl SkOpener for Toy {
    type Error = BadIcv;
    fn iv_len(&self) -> usize {
        self.iv
    }
    fn icv_len(&self) -> usize {
        self.icv
    }
    fn block_len(&self) -> usize {
        self.block
    }
    fn open(&mut self, msg: &[u8], l: &SkLayout) -> Result<Vec<u8>, BadIcv> {
        if Toy::sum(&msg[l.integrity_covered()], self.icv) != msg[l.icv()] {
            return Err(BadIcv);
        }
        Ok(msg[l.ciphertext()].iter().map(|b| b ^ self.key).collect())
    }
}

fn toy() -> Toy {
    Toy {
        key: 0x5a,
        block: 16,
        iv: 16,
        icv: 16,
        seen_layout: None,
    }
}

#[test]
fn sk_seal_then_open_round_trips() {
    let inner = vec![
        Payload::IdI(IdPayload::from_addr("198.51.100.7".parse().unwrap())),
        Payload::Auth(AuthPayload {
            method: AuthMethod::SHARED_KEY_MIC,
            data: vec![3; 32],
        }),
        Payload::Sa(esp_proposals()),
        Payload::TsI(ts_v4()),
        Payload::TsR(ts_mixed()),
    ];
    let m = Message {
        header: header(ExchangeType::IKE_AUTH, Flags::INITIATOR),
        payloads: vec![],
    };
    let mut t = toy();
    let bytes = m.encode_with_sk(&inner, &mut t).unwrap();
    let layout = t.seen_layout.unwrap();
    assert_eq!(layout.end, bytes.len());
    assert_eq!(layout.iv_start, 32);
    assert_eq!(bytes[16], PayloadType::SK.0);
    assert_eq!(
        bytes[28],
        PayloadType::IDi.0,
        "SK next payload = first inner"
    );

    let decoded = Message::decode(&bytes).unwrap();
    let enc = decoded.encrypted().unwrap();
    assert_eq!(enc.first_inner, PayloadType::IDi);
    assert_eq!(
        sk_associated_data_len(bytes.len(), enc.body.len()),
        Some(layout.iv_start)
    );
    assert_eq!(decoded.sk_layout(bytes.len(), 16, 16, 16), Ok(layout));
    let opened = decoded.open_sk(&bytes, &mut toy()).unwrap();
    assert_eq!(opened, inner);

    // Flip one ciphertext bit: integrity check must fail.
    let mut bad = bytes.clone();
    bad[layout.ct_start] ^= 1;
    let decoded_bad = Message::decode(&bad).unwrap();
    assert!(matches!(
        decoded_bad.open_sk(&bad, &mut toy()),
        Err(SkOpenError::Crypto(BadIcv))
    ));
    // A datagram other than the one decoded is refused before any crypto.
    assert!(matches!(
        decoded.open_sk(&bad, &mut toy()),
        Err(SkOpenError::Decode(DecodeError::BadSkLength))
    ));
}

#[test]
fn sk_with_clear_payloads_and_empty_inner() {
    let m = Message {
        header: header(ExchangeType::INFORMATIONAL, Flags::RESPONSE),
        payloads: vec![Payload::VendorId(VendorId(vec![1, 2]))],
    };
    let mut t = Toy {
        key: 1,
        block: 4,
        iv: 8,
        icv: 16,
        seen_layout: None,
    };
    let bytes = m.encode_with_sk(&[], &mut t).unwrap();
    let d = Message::decode(&bytes).unwrap();
    assert_eq!(d.payloads.len(), 2);
    assert_eq!(d.payloads[0], m.payloads[0]);
    assert_eq!(d.encrypted().unwrap().first_inner, PayloadType::NONE);
    let mut o = Toy {
        key: 1,
        block: 4,
        iv: 8,
        icv: 16,
        seen_layout: None,
    };
    assert_eq!(d.open_sk(&bytes, &mut o).unwrap(), vec![]);
}

#[test]
fn decode_inner_checks_padding() {
    assert_eq!(decode_inner(PayloadType::NONE, &[0]), Ok(vec![]));
    assert_eq!(decode_inner(PayloadType::NONE, &[9, 9, 2]), Ok(vec![]));
    assert_eq!(
        decode_inner(PayloadType::NONE, &[9, 3]),
        Err(DecodeError::BadPadding)
    );
    assert_eq!(
        decode_inner(PayloadType::NONE, &[]),
        Err(DecodeError::BadPadding)
    );
}

#[test]
fn udp4500_marker() {
    let m = Message {
        header: header(ExchangeType::IKE_AUTH, Flags::INITIATOR),
        payloads: vec![],
    }
    .encode();
    let framed = with_non_esp_marker(&m);
    assert_eq!(&framed[..4], &[0, 0, 0, 0]);
    assert_eq!(classify_udp4500(&framed), Udp4500::Ike(&m[..]));
    let esp = [0xc0, 0, 0, 1, 0, 0, 0, 1, 0xee];
    assert_eq!(classify_udp4500(&esp), Udp4500::Esp(&esp[..]));
    assert_eq!(classify_udp4500(&[0xff]), Udp4500::NatKeepalive);
    assert_eq!(classify_udp4500(&[0, 0]), Udp4500::Malformed);
}

#[test]
fn error_notifies() {
    let n = DecodeError::UnknownCritical(200).to_notify();
    assert_eq!(n.ntype, NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD);
    assert_eq!(n.data, [200]);
    assert_eq!(
        DecodeError::BadVersion(0x30).to_notify(),
        Notify::new(NotifyType::INVALID_MAJOR_VERSION, vec![])
    );
    assert_eq!(
        DecodeError::SkNotLast.to_notify().ntype,
        NotifyType::INVALID_SYNTAX
    );
    assert!(NotifyType::INVALID_SYNTAX.is_error());
    assert!(!NotifyType::COOKIE.is_error());
}

#[test]
fn id_helpers_and_debug_names() {
    let v4 = IdPayload::from_addr(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(v4.addr(), Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))));
    let v6 = IdPayload::from_addr("2001:db8::1".parse().unwrap());
    assert_eq!(v6.id_type, IdType::ID_IPV6_ADDR);
    assert_eq!(v6.addr(), Some("2001:db8::1".parse().unwrap()));
    let f = IdPayload::fqdn("gw.example");
    assert_eq!((f.id_type, f.addr()), (IdType::ID_FQDN, None));
    assert_eq!(format!("{:?}", NotifyType::COOKIE), "COOKIE");
    assert_eq!(format!("{:?}", NotifyType(0x4321)), "NotifyType(0x4321)");
    assert_eq!(format!("{:?}", PayloadType::SK), "SK");
    assert_eq!(
        format!("{:?}", Flags::INITIATOR | Flags::RESPONSE),
        "Flags(0x28 I R)"
    );
}
