//! Diffie-Hellman over the 2048-bit MODP group (IKE group 14, RFC 3526 §3).
//!
//! Exponentiation uses `num-bigint`; a 2048-bit modpow costs about a
//! millisecond, which is acceptable for a handshake, not for a packet path.

use num_bigint::BigUint;
use num_traits::One;
use rand::Rng;
use zeroize::{Zeroize, Zeroizing};

/// IKEv2 transform ID of the only group we offer and accept (RFC 7296 §3.3.2).
pub const GROUP_MODP2048: u16 = 14;

/// Bytes of a public value and of the shared secret: the prime's length
/// (RFC 7296 §3.4: the KE data is left-padded to the prime's size).
pub const MODP2048_LEN: usize = 256;

/// Secret exponent length. RFC 3526 §8 estimates group 14 at ~110 bits of
/// strength, needing an exponent of at least 220 bits; 512 bits keeps a
/// margin while costing a quarter of a full-length exponent.
const SECRET_LEN: usize = 64;

/// RFC 3526 §3, generator 2.
const MODP2048_P_HEX: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1",
    "29024E088A67CC74020BBEA63B139B22514A08798E3404DD",
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245",
    "E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3D",
    "C2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F",
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D",
    "670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9",
    "DE2BCBF6955817183995497CEA956AE515D2261898FA0510",
    "15728E5A8AACAA68FFFFFFFFFFFFFFFF",
);

/// Why a peer's public value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DhError {
    /// KE data length differs from the group's prime length (RFC 7296 §3.4).
    #[error("KE data is {0} bytes, group 14 needs 256")]
    BadPublicLength(usize),
    /// y ∉ (1, p-1): would force the shared secret into a tiny subgroup.
    #[error("peer public value out of range (must be 1 < y < p-1)")]
    PublicOutOfRange,
}

fn prime() -> BigUint {
    // The constant is valid hex; an empty result can only come from a typo,
    // which the unit tests catch.
    BigUint::parse_bytes(MODP2048_P_HEX.as_bytes(), 16).unwrap_or_default()
}

/// Our half of one exchange: the secret exponent (zeroized on drop) and the
/// public value we send in KE.
pub struct DhKeyPair {
    secret: Zeroizing<Vec<u8>>,
    public: Vec<u8>,
}

impl std::fmt::Debug for DhKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DhKeyPair { group: 14, secret: <hidden> }")
    }
}

impl DhKeyPair {
    /// A fresh key pair with the exponent from the thread CSPRNG.
    pub fn generate() -> DhKeyPair {
        let mut secret = Zeroizing::new(vec![0u8; SECRET_LEN]);
        rand::rng().fill_bytes(&mut secret);
        // Never a zero exponent.
        secret[0] |= 0x80;
        DhKeyPair::from_secret(&secret)
    }

    /// A key pair from a given exponent (big-endian). For known-answer tests;
    /// real exchanges use [`DhKeyPair::generate`].
    pub fn from_secret(secret: &[u8]) -> DhKeyPair {
        let p = prime();
        // BigUint offers no Zeroize: the byte copy we own is zeroized, the
        // transient limbs are not (num-bigint limitation).
        let x = BigUint::from_bytes_be(secret);
        let y = BigUint::from(2u32).modpow(&x, &p);
        DhKeyPair {
            secret: Zeroizing::new(secret.to_vec()),
            public: left_pad(&y.to_bytes_be()),
        }
    }

    /// g^x mod p, 256 bytes big-endian, as carried in the KE payload.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// g^(xy) mod p, 256 bytes big-endian, after validating the peer's value.
    pub fn shared_secret(&self, peer_public: &[u8]) -> Result<Zeroizing<Vec<u8>>, DhError> {
        if peer_public.len() != MODP2048_LEN {
            return Err(DhError::BadPublicLength(peer_public.len()));
        }
        let p = prime();
        let y = BigUint::from_bytes_be(peer_public);
        let p_minus_1 = &p - BigUint::one();
        if y <= BigUint::one() || y >= p_minus_1 {
            return Err(DhError::PublicOutOfRange);
        }
        let x = BigUint::from_bytes_be(&self.secret);
        let z = y.modpow(&x, &p);
        let mut bytes = z.to_bytes_be();
        let out = Zeroizing::new(left_pad(&bytes));
        bytes.zeroize();
        Ok(out)
    }
}

fn left_pad(v: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; MODP2048_LEN];
    let n = v.len().min(MODP2048_LEN);
    out[MODP2048_LEN - n..].copy_from_slice(&v[v.len() - n..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prime_parses_to_2048_bits() {
        assert_eq!(prime().bits(), 2048);
    }

    #[test]
    fn both_sides_agree() {
        let a = DhKeyPair::generate();
        let b = DhKeyPair::generate();
        assert_eq!(a.public().len(), 256);
        let s1 = a.shared_secret(b.public()).unwrap();
        let s2 = b.shared_secret(a.public()).unwrap();
        assert_eq!(*s1, *s2);
        assert_eq!(s1.len(), 256);
        assert_ne!(a.public(), b.public());
    }

    #[test]
    fn rejects_degenerate_public_values() {
        let a = DhKeyPair::generate();
        let mut one = vec![0u8; 256];
        one[255] = 1;
        assert_eq!(
            a.shared_secret(&one).unwrap_err(),
            DhError::PublicOutOfRange
        );
        assert_eq!(
            a.shared_secret(&[0u8; 256]).unwrap_err(),
            DhError::PublicOutOfRange
        );
        let p_minus_1 = left_pad(&(prime() - BigUint::one()).to_bytes_be());
        assert_eq!(
            a.shared_secret(&p_minus_1).unwrap_err(),
            DhError::PublicOutOfRange
        );
        let p = left_pad(&prime().to_bytes_be());
        assert_eq!(a.shared_secret(&p).unwrap_err(), DhError::PublicOutOfRange);
        assert_eq!(
            a.shared_secret(&[0xff; 256]).unwrap_err(),
            DhError::PublicOutOfRange
        );
        assert_eq!(
            a.shared_secret(&[2u8; 255]).unwrap_err(),
            DhError::BadPublicLength(255)
        );
        let mut two = vec![0u8; 256];
        two[255] = 2;
        assert!(a.shared_secret(&two).is_ok());
    }

    #[test]
    fn small_exponent_known_answer() {
        // 2^10 = 1024 < p, so the public value is exactly 0x0400.
        let k = DhKeyPair::from_secret(&[10]);
        assert_eq!(&k.public()[254..], &[0x04, 0x00]);
        assert!(k.public()[..254].iter().all(|&b| b == 0));
    }

    #[test]
    fn debug_hides_secret() {
        let k = DhKeyPair::from_secret(&[0x42; 64]);
        assert!(!format!("{k:?}").contains("42"));
    }
}
