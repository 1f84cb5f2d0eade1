//! The bearer token every shoal gRPC call carries when the fleet runs with
//! `--auth-token-file`: `authorization: Bearer <token>` metadata, added by [`BearerToken`] on
//! clients and checked by [`RequireToken`] on the coordinator (the HTTP status API checks the
//! same header with [`matches`]). The token is read from a file so that it never appears in a
//! process list, and it is never logged.

use std::path::Path;
use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// A shared secret, compared in constant time.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

/// Why a token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("read the auth token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no usable token.
    #[error(
        "the auth token file {0} is empty or not one line of visible ASCII; put a random token \
         in it (e.g. `openssl rand -hex 32`)"
    )]
    Invalid(String),
}

impl Token {
    /// Reads the token from `path` (surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::new(text.trim()).ok_or_else(|| TokenError::Invalid(path.display().to_string()))
    }

    /// A token from its text: non-empty visible ASCII (it must fit an HTTP header).
    pub fn new(text: &str) -> Option<Self> {
        let valid = !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_graphic());
        valid.then(|| Self(Arc::from(text)))
    }

    /// Whether `header` (an `authorization` value) is `Bearer <this token>`.
    pub fn matches(&self, header: Option<&[u8]>) -> bool {
        let Some(presented) = header.and_then(|value| value.strip_prefix(b"Bearer ")) else {
            return false;
        };
        constant_time_eq(presented, self.0.as_bytes())
    }

    fn header(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

/// Equality whose time depends only on the lengths, not on where the bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Client side: adds `authorization: Bearer <token>` to every call (nothing without a token).
#[derive(Debug, Clone, Default)]
pub struct BearerToken(Option<Token>);

impl BearerToken {
    /// Sends `token` if given.
    pub fn new(token: Option<Token>) -> Self {
        Self(token)
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            let value = MetadataValue::try_from(token.header())
                .map_err(|_| Status::internal("the auth token is not a valid header value"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// Server side: refuses calls without the right token (everything passes without one).
#[derive(Debug, Clone, Default)]
pub struct RequireToken(Option<Token>);

impl RequireToken {
    /// Requires `token` if given.
    pub fn new(token: Option<Token>) -> Self {
        Self(token)
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.0 else {
            return Ok(request);
        };
        let header = request
            .metadata()
            .get("authorization")
            .map(|value| value.as_bytes());
        if token.matches(header) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "missing or wrong bearer token: this coordinator runs with --auth-token-file; \
                 give the client the same token (--auth-token-file or SHOAL_AUTH_TOKEN_FILE)",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_must_be_visible_ascii() {
        assert!(Token::new("").is_none());
        assert!(Token::new("a b").is_none());
        assert!(Token::new("tok\u{e9}n").is_none());
        assert!(Token::new("0123abcdef").is_some());
        assert_eq!(format!("{:?}", Token::new("s3cret").unwrap()), "Token(***)");
    }

    #[test]
    fn only_the_exact_bearer_header_matches() {
        let token = Token::new("s3cret").unwrap();
        assert!(token.matches(Some(b"Bearer s3cret")));
        assert!(!token.matches(None));
        assert!(!token.matches(Some(b"s3cret")));
        assert!(!token.matches(Some(b"Bearer s3cre")));
        assert!(!token.matches(Some(b"Bearer s3cret2")));
        assert!(!token.matches(Some(b"bearer s3cret")));
    }

    #[test]
    fn the_client_side_header_passes_the_server_side_check() {
        let token = Token::new("s3cret").unwrap();
        let sent = BearerToken::new(Some(token.clone()))
            .call(Request::new(()))
            .unwrap();
        assert!(RequireToken::new(Some(token.clone())).call(sent).is_ok());
        let refused = RequireToken::new(Some(token))
            .call(Request::new(()))
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(RequireToken::new(None).call(Request::new(())).is_ok());
    }
}
