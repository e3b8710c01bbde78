//! Public key material for the data plane's JSON Web Keys. RSA moduli are real (the `rsa` crate) so
//! a client computing the key size from `n` (azure-notes Trap T4) sees the stated bit length.
//! Generation is slow, so one modulus per size is generated lazily, kept for the process, and
//! cached in the user's cache directory (`$XDG_CACHE_HOME/azure-sim`, else `~/.cache/azure-sim`)
//! so a test suite that starts many simulators pays once per size, and leaves nothing in the
//! temp directory. Only the public modulus is kept; it protects nothing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::traits::PublicKeyParts;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// Why key material could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    /// RSA generation failed.
    #[error("RSA key generation failed: {0}")]
    Rsa(String),
    /// EC generation failed.
    #[error("EC key generation failed")]
    Ec,
}

/// A JWK's public parts, already base64url-encoded.
#[derive(Debug, Clone)]
pub enum PublicJwk {
    /// `n`, `e`.
    Rsa {
        /// Modulus.
        n: String,
        /// Public exponent.
        e: String,
    },
    /// `crv`, `x`, `y`.
    Ec {
        /// Curve name.
        crv: String,
        /// X coordinate.
        x: String,
        /// Y coordinate.
        y: String,
    },
}

type Cache = Mutex<HashMap<String, Arc<OnceLock<Result<PublicJwk, String>>>>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Material for an RSA key of `bits`, generated at most once per size per process.
pub fn rsa(bits: u32) -> Result<PublicJwk, MaterialError> {
    cached(&format!("rsa-{bits}"), || {
        rsa_generate(bits).map_err(|e| e.to_string())
    })
    .map_err(MaterialError::Rsa)
}

/// Material for an EC key on `curve`. P-256 and P-384 are real points (ring); P-521 and P-256K,
/// which ring cannot generate, get random coordinates of the right length.
pub fn ec(curve: &str) -> Result<PublicJwk, MaterialError> {
    cached(&format!("ec-{curve}"), || {
        ec_generate(curve).ok_or_else(|| "ec".to_owned())
    })
    .map_err(|_| MaterialError::Ec)
}

fn cached(
    name: &str,
    make: impl FnOnce() -> Result<PublicJwk, String>,
) -> Result<PublicJwk, String> {
    let cell = {
        let mut map = cache().lock().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_owned()).or_default().clone()
    };
    cell.get_or_init(make).clone()
}

/// `rsa-modulus-{bits}.b64` in the user's cache directory; `None` (no disk cache) without one.
fn disk_cache_path(bits: u32) -> Option<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let base = non_empty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(
        base.join("azure-sim")
            .join(format!("rsa-modulus-{bits}.b64")),
    )
}

fn rsa_generate(bits: u32) -> Result<PublicJwk, rsa::Error> {
    let e = URL_SAFE_NO_PAD.encode([1u8, 0, 1]);
    let path = disk_cache_path(bits);
    if let Some(text) = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
        let n = text.trim().to_owned();
        if URL_SAFE_NO_PAD
            .decode(&n)
            .map(|bytes| modulus_bits(&bytes) == bits)
            .unwrap_or(false)
        {
            return Ok(PublicJwk::Rsa { n, e });
        }
    }
    let key = rsa::PrivateKey::new(&mut getrandom::SysRng, bits as usize)?;
    let n = URL_SAFE_NO_PAD.encode(key.n_bytes());
    if let Some(path) = path {
        store(&path, &n);
    }
    Ok(PublicJwk::Rsa { n, e })
}

/// Writes the cache file atomically (another process may be reading it); best effort.
fn store(path: &std::path::Path, n: &str) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let stored = std::fs::write(&tmp, n).and_then(|()| std::fs::rename(&tmp, path));
    if stored.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Bit length of a big-endian unsigned integer (leading zero bytes ignored).
pub fn modulus_bits(bytes: &[u8]) -> u32 {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    match trimmed.first() {
        None => 0,
        Some(first) => (trimmed.len() as u32 - 1) * 8 + (8 - first.leading_zeros()),
    }
}

fn ec_generate(curve: &str) -> Option<PublicJwk> {
    use ring::rand::SecureRandom;
    use ring::signature::{self, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let alg = match curve.to_ascii_uppercase().as_str() {
        "P-256" => Some(&signature::ECDSA_P256_SHA256_ASN1_SIGNING),
        "P-384" => Some(&signature::ECDSA_P384_SHA384_ASN1_SIGNING),
        _ => None,
    };
    let (x, y) = match alg {
        Some(alg) => {
            let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).ok()?;
            let pair = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).ok()?;
            let point = pair.public_key().as_ref();
            let half = (point.len() - 1) / 2;
            (point[1..1 + half].to_vec(), point[1 + half..].to_vec())
        }
        None => {
            let len = if curve.eq_ignore_ascii_case("P-521") {
                66
            } else {
                32
            };
            let mut x = vec![0u8; len];
            let mut y = vec![0u8; len];
            rng.fill(&mut x).ok()?;
            rng.fill(&mut y).ok()?;
            (x, y)
        }
    };
    Some(PublicJwk::Ec {
        crv: curve.to_owned(),
        x: URL_SAFE_NO_PAD.encode(x),
        y: URL_SAFE_NO_PAD.encode(y),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_modulus_has_the_requested_bit_length() {
        let PublicJwk::Rsa { n, e } = rsa(2048).unwrap() else {
            panic!("not RSA");
        };
        assert_eq!(e, "AQAB");
        assert_eq!(modulus_bits(&URL_SAFE_NO_PAD.decode(n).unwrap()), 2048);
    }

    #[test]
    fn ec_points_have_curve_sized_coordinates() {
        let PublicJwk::Ec { x, y, .. } = ec("P-256").unwrap() else {
            panic!("not EC");
        };
        assert_eq!(URL_SAFE_NO_PAD.decode(x).unwrap().len(), 32);
        assert_eq!(URL_SAFE_NO_PAD.decode(y).unwrap().len(), 32);
    }

    #[test]
    fn bit_length_ignores_leading_zeros() {
        assert_eq!(modulus_bits(&[0, 0x80, 0]), 16);
        assert_eq!(modulus_bits(&[0x01]), 1);
        assert_eq!(modulus_bits(&[]), 0);
    }
}
