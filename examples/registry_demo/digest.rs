//! Content digests: `<algorithm>:<lowercase hex>` with the two algorithms the OCI image spec
//! registers, sha256 (the canonical one, used for what the registry digests on its own, such
//! as a manifest pushed by tag) and sha512 (content a client pushes under a sha512 digest).

use sha2::{Digest as _, Sha256, Sha512};

/// A digest algorithm the registry verifies content with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The algorithm of a digest's prefix (`sha256`, `sha512`); `None` for any other.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Self::Sha256),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    /// The length of an encoded digest (hex).
    fn hex_len(self) -> usize {
        match self {
            Self::Sha256 => 64,
            Self::Sha512 => 128,
        }
    }

    /// A hasher of this algorithm, fed nothing yet.
    pub(crate) fn hasher(self) -> Hasher {
        match self {
            Self::Sha256 => Hasher::Sha256(Sha256::new()),
            Self::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    /// The digest of `data` with this algorithm.
    pub(crate) fn digest(self, data: &[u8]) -> Digest {
        let mut hasher = self.hasher();
        hasher.update(data);
        hasher.finish()
    }
}

/// The running hash of an upload, of the algorithm it was started with.
#[derive(Debug, Clone)]
pub(crate) enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(hasher) => hasher.update(data),
            Self::Sha512(hasher) => hasher.update(data),
        }
    }

    pub(crate) fn algorithm(&self) -> Algorithm {
        match self {
            Self::Sha256(_) => Algorithm::Sha256,
            Self::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// The digest of what the hasher was fed.
    pub(crate) fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Self::Sha256(hasher) => (Algorithm::Sha256, hex::encode(hasher.finalize())),
            Self::Sha512(hasher) => (Algorithm::Sha512, hex::encode(hasher.finalize())),
        };
        Digest {
            text: format!("{}:{hex}", algorithm.as_str()),
            algorithm,
        }
    }
}

/// A validated digest: `sha256:` and 64 lowercase hex digits, or `sha512:` and 128.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Digest {
    text: String,
    algorithm: Algorithm,
}

impl Digest {
    /// Parses a digest; `None` for another algorithm, a wrong length or anything but lowercase
    /// hex after the colon (so a digest is always safe in a file path).
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (name, hex) = s.split_once(':')?;
        let algorithm = Algorithm::parse(name)?;
        let valid = hex.len() == algorithm.hex_len()
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| Self {
            text: s.to_owned(),
            algorithm,
        })
    }

    /// The canonical (sha256) digest of `data`.
    pub(crate) fn of(data: &[u8]) -> Self {
        Algorithm::Sha256.digest(data)
    }

    pub(crate) fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// The encoded part, after the colon.
    pub(crate) fn hex(&self) -> &str {
        &self.text[self.algorithm.as_str().len() + 1..]
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const EMPTY_SHA512: &str = "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce\
                                47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";

    #[test]
    fn digests_of_empty_content_are_the_well_known_ones() {
        assert_eq!(Digest::of(b"").as_str(), format!("sha256:{EMPTY_SHA256}"));
        let sha512 = Algorithm::Sha512.digest(b"");
        assert_eq!(sha512.as_str(), format!("sha512:{EMPTY_SHA512}"));
        assert_eq!(sha512.hex(), EMPTY_SHA512);
        assert_eq!(sha512.algorithm(), Algorithm::Sha512);
    }

    #[test]
    fn sha256_and_sha512_digests_parse_with_their_own_length() {
        let sha256 = Digest::parse(&format!("sha256:{EMPTY_SHA256}")).unwrap();
        assert_eq!(sha256, Digest::of(b""));
        let sha512 = Digest::parse(&format!("sha512:{EMPTY_SHA512}")).unwrap();
        assert_eq!(sha512, Algorithm::Sha512.digest(b""));
        assert!(Digest::parse(&format!("sha512:{EMPTY_SHA256}")).is_none());
        assert!(Digest::parse(&format!("sha256:{EMPTY_SHA512}")).is_none());
    }

    #[test]
    fn digest_parse_rejects_other_algorithms_and_bad_hex() {
        assert!(Digest::parse(&format!("sha384:{EMPTY_SHA256}")).is_none());
        assert!(Digest::parse(&format!("SHA256:{EMPTY_SHA256}")).is_none());
        assert!(Digest::parse(&format!("sha256:{}", EMPTY_SHA256.to_uppercase())).is_none());
        assert!(Digest::parse("sha256:../../etc/passwd").is_none());
        assert!(Digest::parse("sha256:baddigeststring").is_none());
        assert!(Digest::parse(EMPTY_SHA256).is_none());
        assert!(Digest::parse("").is_none());
        // A multi-byte character where a hex digit is expected: refused, no slicing panic.
        let mut odd = format!("sha512:{}", &EMPTY_SHA512[..126]);
        odd.push('é');
        assert!(Digest::parse(&odd).is_none());
    }
}
