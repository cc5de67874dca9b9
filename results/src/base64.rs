//! How an artifact's bytes travel inside a JSON record on the console: base64 (RFC 4648,
//! standard alphabet, with padding), the one encoding the runner and the host side agree on.

use ::base64::engine::general_purpose::STANDARD;
use ::base64::Engine as _;

pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// The bytes of `text`; an error names the first thing that is not base64.
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    STANDARD.decode(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4648_test_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(encode(plain.as_bytes()), encoded);
            assert_eq!(decode(encoded).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn what_is_not_base64_is_refused() {
        for bad in ["Zm9", "Zm9*", "Zg==Zm9v", "Z==="] {
            assert!(decode(bad).is_err(), "{bad}");
        }
        assert!(decode("Zm9*").unwrap_err().contains("offset 3"));
    }
}
