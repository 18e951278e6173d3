//! Who may post events: an API key (`x-api-key: KEY` or `Authorization: Bearer KEY`, what an
//! EventBridge connection of type API key sends) and/or HTTP Basic credentials, read from
//! environment variables at start. Secrets are compared in constant time.

use std::fmt;

use anyhow::Context as _;
use http::HeaderMap;
use http::header::AUTHORIZATION;

/// The accepted credentials; any one configured method that matches lets a request in.
#[derive(Default)]
pub(crate) struct Auth {
    api_key: Option<Vec<u8>>,
    /// Who the API key's holder is, in audit entries (`--api-key-name`).
    api_key_name: String,
    /// The Basic user name, in audit entries.
    basic_user: String,
    /// `base64(user:password)`, compared with the token of `Authorization: Basic …` (encoding is
    /// deterministic, so no decoding of untrusted input is needed).
    basic: Option<Vec<u8>>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("api_key", &self.api_key.as_ref().map(|_| "<secret>"))
            .field("basic", &self.basic.as_ref().map(|_| "<secret>"))
            .finish()
    }
}

fn secret(var: &str) -> anyhow::Result<String> {
    let value = std::env::var(var)
        .with_context(|| format!("environment variable {var} (named by a flag) is not set"))?;
    if value.is_empty() {
        anyhow::bail!("environment variable {var} is empty");
    }
    Ok(value)
}

impl Auth {
    /// Reads the API key from `api_key_env` and `user:password` from `basic_env`, where named.
    pub(crate) fn from_env(api_key_env: Option<&str>, basic_env: Option<&str>) -> anyhow::Result<Self> {
        let api_key = api_key_env.map(secret).transpose()?.map(String::into_bytes);
        let mut basic_user = String::new();
        let basic = match basic_env {
            Some(var) => {
                let pair = secret(var)?;
                let Some((user, _)) = pair.split_once(':') else {
                    anyhow::bail!("environment variable {var} must hold user:password");
                };
                basic_user = user.to_owned();
                Some(base64(pair.as_bytes()).into_bytes())
            }
            None => None,
        };
        Ok(Self {
            api_key,
            api_key_name: "api-key".into(),
            basic_user,
            basic,
        })
    }

    /// Names the API key's holder in audit entries.
    pub(crate) fn with_api_key_name(mut self, name: &str) -> Self {
        self.api_key_name = name.to_owned();
        self
    }

    /// Who a request with these headers acts as: the API key's name, the Basic user, or
    /// `anonymous` when no credentials are required; `None` without accepted credentials.
    pub(crate) fn who(&self, headers: &HeaderMap) -> Option<String> {
        if self.is_open() {
            return Some("anonymous".into());
        }
        if !self.allows(headers) {
            return None;
        }
        let basic = headers.get_all(AUTHORIZATION).iter().any(|v| {
            matches!((&self.basic, strip_scheme(v.as_bytes(), b"basic")), (Some(pair), Some(token)) if ct_eq(token, pair))
        });
        Some(if basic {
            self.basic_user.clone()
        } else {
            self.api_key_name.clone()
        })
    }

    /// Whether no credentials are configured (everyone is let in).
    pub(crate) fn is_open(&self) -> bool {
        self.api_key.is_none() && self.basic.is_none()
    }

    /// Whether Basic authentication is configured (401 answers then carry a challenge).
    pub(crate) fn wants_basic(&self) -> bool {
        self.basic.is_some()
    }

    /// Whether the request's headers carry accepted credentials. Every candidate header is
    /// compared, so the time taken does not depend on which one matched.
    pub(crate) fn allows(&self, headers: &HeaderMap) -> bool {
        if self.is_open() {
            return true;
        }
        let mut ok = false;
        if let Some(key) = &self.api_key {
            for value in headers.get_all("x-api-key") {
                ok |= ct_eq(value.as_bytes().trim_ascii(), key);
            }
        }
        for value in headers.get_all(AUTHORIZATION) {
            let value = value.as_bytes();
            if let (Some(key), Some(token)) = (&self.api_key, strip_scheme(value, b"bearer")) {
                ok |= ct_eq(token, key);
            }
            if let (Some(pair), Some(token)) = (&self.basic, strip_scheme(value, b"basic")) {
                ok |= ct_eq(token, pair);
            }
        }
        ok
    }
}

/// The credentials after an `Authorization` scheme (matched case-insensitively), trimmed.
fn strip_scheme<'a>(value: &'a [u8], scheme: &[u8]) -> Option<&'a [u8]> {
    let (head, rest) = value.split_at_checked(scheme.len())?;
    if !head.eq_ignore_ascii_case(scheme) || !rest.first().is_some_and(u8::is_ascii_whitespace) {
        return None;
    }
    Some(rest.trim_ascii())
}

/// Compares `given` with the secret `expected` in time that depends only on the secret's
/// length, not on where the first difference is.
pub(crate) fn ct_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= given.get(i).copied().unwrap_or(0) ^ e;
    }
    std::hint::black_box(diff) == 0
}

/// Standard base64 with padding (RFC 4648 §4), as HTTP Basic uses.
pub(crate) fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn constant_time_equality_is_equality() {
        assert!(ct_eq(b"secret", b"secret"));
        assert!(!ct_eq(b"secreT", b"secret"));
        assert!(!ct_eq(b"secret-longer", b"secret"));
        assert!(!ct_eq(b"sec", b"secret"));
        assert!(!ct_eq(b"", b"secret"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn accepts_the_key_in_either_header_and_basic_credentials() {
        let auth = Auth {
            api_key: Some(b"k3y".to_vec()),
            api_key_name: "deploy-bot".into(),
            basic_user: "ops".into(),
            basic: Some(base64(b"ops:pw").into_bytes()),
        };
        assert!(!auth.allows(&headers(&[])));
        // Who acts, for the audit log.
        assert_eq!(auth.who(&headers(&[])), None);
        assert_eq!(
            auth.who(&headers(&[("x-api-key", "k3y")])).as_deref(),
            Some("deploy-bot")
        );
        assert_eq!(
            auth.who(&headers(&[("authorization", "Basic b3BzOnB3")]))
                .as_deref(),
            Some("ops")
        );
        assert_eq!(Auth::default().who(&headers(&[])).as_deref(), Some("anonymous"));
        assert!(auth.allows(&headers(&[("x-api-key", "k3y")])));
        assert!(!auth.allows(&headers(&[("x-api-key", "k3")])));
        assert!(auth.allows(&headers(&[("authorization", "Bearer k3y")])));
        assert!(auth.allows(&headers(&[("authorization", "bearer  k3y ")])));
        assert!(!auth.allows(&headers(&[("authorization", "Bearerk3y")])));
        assert!(auth.allows(&headers(&[("authorization", "Basic b3BzOnB3")])));
        assert!(!auth.allows(&headers(&[("authorization", "Basic b3BzOnB4")])));
        // The key is not a Basic token and the other way round.
        assert!(!auth.allows(&headers(&[("authorization", "Basic k3y")])));
        assert!(!auth.allows(&headers(&[("x-api-key", "b3BzOnB3")])));
        // A wrong header next to a right one still lets the request in.
        assert!(auth.allows(&headers(&[
            ("x-api-key", "nope"),
            ("authorization", "Bearer k3y")
        ])));
    }

    #[test]
    fn the_secrets_stay_out_of_debug_output() {
        let auth = Auth {
            api_key: Some(b"k3y".to_vec()),
            basic: None,
            ..Auth::default()
        };
        assert!(!format!("{auth:?}").contains("k3y"));
    }
}
