//! IKE SA and child SA key derivation (RFC 7296 §2.14, §2.17).
//!
//! Fixed to the IKE suite we negotiate: PRF_HMAC_SHA2_256, ENCR_AES_CBC-256,
//! AUTH_HMAC_SHA2_256_128.

use espgate_dataplane::api::{SaKeys, Suite};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::prf::{prf, prf_plus, PRF_LEN};

/// ENCR_AES_CBC with a 256-bit key.
pub const IKE_ENCR_KEY_LEN: usize = 32;
/// AUTH_HMAC_SHA2_256_128 key length (RFC 4868 §2.1.1).
pub const IKE_INTEG_KEY_LEN: usize = 32;

/// SK_d, SK_ai/ar, SK_ei/er, SK_pi/pr. Zeroized on drop; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct IkeKeys {
    pub sk_d: [u8; PRF_LEN],
    pub sk_ai: [u8; IKE_INTEG_KEY_LEN],
    pub sk_ar: [u8; IKE_INTEG_KEY_LEN],
    pub sk_ei: [u8; IKE_ENCR_KEY_LEN],
    pub sk_er: [u8; IKE_ENCR_KEY_LEN],
    pub sk_pi: [u8; PRF_LEN],
    pub sk_pr: [u8; PRF_LEN],
}

impl std::fmt::Debug for IkeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IkeKeys { <hidden> }")
    }
}

/// SKEYSEED = prf(Ni | Nr, g^ir) (RFC 7296 §2.14).
pub fn skeyseed(ni: &[u8], nr: &[u8], shared: &[u8]) -> Zeroizing<[u8; PRF_LEN]> {
    let mut key = Zeroizing::new(Vec::with_capacity(ni.len() + nr.len()));
    key.extend_from_slice(ni);
    key.extend_from_slice(nr);
    Zeroizing::new(prf(&key, &[shared]))
}

/// {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr}
///   = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr) (RFC 7296 §2.14).
pub fn ike_keys(
    skeyseed: &[u8],
    ni: &[u8],
    nr: &[u8],
    spi_i: &[u8; 8],
    spi_r: &[u8; 8],
) -> IkeKeys {
    let total = 3 * PRF_LEN + 2 * IKE_INTEG_KEY_LEN + 2 * IKE_ENCR_KEY_LEN;
    let km = prf_plus(skeyseed, &[ni, nr, spi_i, spi_r], total);
    let mut off = 0;
    let mut take = |n: usize| {
        let s = &km[off..off + n];
        off += n;
        s
    };
    let mut k = IkeKeys {
        sk_d: [0; PRF_LEN],
        sk_ai: [0; IKE_INTEG_KEY_LEN],
        sk_ar: [0; IKE_INTEG_KEY_LEN],
        sk_ei: [0; IKE_ENCR_KEY_LEN],
        sk_er: [0; IKE_ENCR_KEY_LEN],
        sk_pi: [0; PRF_LEN],
        sk_pr: [0; PRF_LEN],
    };
    k.sk_d.copy_from_slice(take(PRF_LEN));
    k.sk_ai.copy_from_slice(take(IKE_INTEG_KEY_LEN));
    k.sk_ar.copy_from_slice(take(IKE_INTEG_KEY_LEN));
    k.sk_ei.copy_from_slice(take(IKE_ENCR_KEY_LEN));
    k.sk_er.copy_from_slice(take(IKE_ENCR_KEY_LEN));
    k.sk_pi.copy_from_slice(take(PRF_LEN));
    k.sk_pr.copy_from_slice(take(PRF_LEN));
    k
}

/// ESP keys of one child SA, named by the direction they protect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildKeys {
    /// Initiator → responder (the initiator's outbound SA).
    pub i2r: SaKeys,
    /// Responder → initiator.
    pub r2i: SaKeys,
}

/// KEYMAT = prf+(SK_d, [g^ir (new)] | Ni | Nr) (RFC 7296 §2.17), taken in
/// the order: encr i→r (key | salt for GCM), integ i→r, encr r→i, integ r→i.
/// `ni`/`nr` are the nonces of the exchange that created the child SA.
pub fn child_keys(
    sk_d: &[u8],
    pfs_shared: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
    suite: Suite,
) -> ChildKeys {
    let e = suite.encr_keymat_len();
    let a = suite.integ_key_len();
    let seed: [&[u8]; 3] = [pfs_shared.unwrap_or(&[]), ni, nr];
    let km = prf_plus(sk_d, &seed, 2 * (e + a));
    ChildKeys {
        i2r: SaKeys {
            encr: km[..e].to_vec(),
            integ: km[e..e + a].to_vec(),
        },
        r2i: SaKeys {
            encr: km[e + a..2 * e + a].to_vec(),
            integ: km[2 * e + a..2 * (e + a)].to_vec(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_keys_have_suite_lengths() {
        for suite in [
            Suite::Aes256CbcHmacSha256,
            Suite::Aes256Gcm16,
            Suite::Aes128Gcm16,
            Suite::Aes256CbcHmacSha1,
        ] {
            let k = child_keys(&[1; 32], None, &[2; 32], &[3; 32], suite);
            assert_eq!(k.i2r.encr.len(), suite.encr_keymat_len());
            assert_eq!(k.i2r.integ.len(), suite.integ_key_len());
            assert_eq!(k.r2i.encr.len(), suite.encr_keymat_len());
            assert_ne!(k.i2r, k.r2i);
        }
    }

    #[test]
    fn pfs_changes_keys() {
        let a = child_keys(
            &[1; 32],
            None,
            &[2; 32],
            &[3; 32],
            Suite::Aes256CbcHmacSha256,
        );
        let b = child_keys(
            &[1; 32],
            Some(&[9; 256]),
            &[2; 32],
            &[3; 32],
            Suite::Aes256CbcHmacSha256,
        );
        assert_ne!(a, b);
    }

    #[test]
    fn debug_hides_keys() {
        let k = ike_keys(&[7; 32], &[1; 32], &[2; 32], &[3; 8], &[4; 8]);
        assert_eq!(format!("{k:?}"), "IkeKeys { <hidden> }");
        assert_ne!(k.sk_ei, k.sk_er);
    }
}
