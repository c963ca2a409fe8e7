//! Who may do what. A game or exam backend holds an `admin` or `service`
//! token and hands each player a `participant` token (scoped to one session
//! and one participant) and each spectator a `viewer` token (one session,
//! read and watch only). `AUTH_MODE=none` lets everyone do everything, as
//! the v2 service did.
//!
//! Tokens are JWTs checked with exactly one algorithm (HS256 with
//! `JWT_SECRET`, or RS256/EdDSA with the PEM public key in `JWT_PUBLIC_KEY`),
//! so a token signed with another algorithm, or with `none`, never passes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::{AuthMode, Config};
use crate::domain::{ParticipantId, SessionId};

/// Clock difference tolerated on `exp` (and `nbf`).
const LEEWAY_SECONDS: u64 = 5;

/// What a token may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Everything on sessions (a backend).
    Service,
    /// One participant of one session: read, watch, and switch on its turn.
    Participant,
    /// One session: read and watch.
    Viewer,
}

/// The claims SyncKairos reads; others are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub role: Role,
    /// The session a participant or viewer token is scoped to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<SessionId>,
    /// The participant a participant token speaks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<ParticipantId>,
    /// Expiry, seconds since the epoch (required).
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// `AUTH_MODE=none`: no credentials are asked for or read.
    Anyone,
    /// A verified token.
    Token(Claims),
}

/// Why a request is refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    /// 401: no token, or one that does not verify.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: a valid token without the right.
    #[error("{0}")]
    Forbidden(&'static str),
}

/// Why the auth configuration is unusable; stops the start-up.
#[derive(Debug, Error)]
pub enum AuthConfigError {
    #[error("AUTH_MODE=jwt needs JWT_SECRET or JWT_PUBLIC_KEY")]
    NoKey,
    #[error("set only one of JWT_SECRET and JWT_PUBLIC_KEY")]
    TwoKeys,
    #[error("JWT_SECRET must be at least 32 bytes")]
    ShortSecret,
    #[error("cannot read JWT_PUBLIC_KEY {path}: {source}")]
    ReadKey {
        path: String,
        source: std::io::Error,
    },
    #[error("JWT_PUBLIC_KEY {0} is not an RSA or Ed25519 public key in PEM")]
    BadKey(String),
}

/// The verifier (and, with a shared secret, the issuer) of tokens.
pub struct Auth {
    decoding: Option<(DecodingKey, Validation)>,
    /// Only with HS256: the server can mint tokens itself.
    encoding: Option<EncodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Auth {
    /// Reads the mode and keys once, at start-up.
    pub fn from_config(config: &Config) -> Result<Self, AuthConfigError> {
        let mut auth = Self {
            decoding: None,
            encoding: None,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
        };
        if config.auth_mode == AuthMode::None {
            return Ok(auth);
        }
        let (algorithm, key) = match (&config.jwt_secret, &config.jwt_public_key) {
            (None, None) => return Err(AuthConfigError::NoKey),
            (Some(_), Some(_)) => return Err(AuthConfigError::TwoKeys),
            (Some(secret), None) => {
                let secret = secret.expose().as_bytes();
                if secret.len() < 32 {
                    return Err(AuthConfigError::ShortSecret);
                }
                auth.encoding = Some(EncodingKey::from_secret(secret));
                (Algorithm::HS256, DecodingKey::from_secret(secret))
            }
            (None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|source| AuthConfigError::ReadKey {
                    path: path.clone(),
                    source,
                })?;
                if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                    (Algorithm::RS256, key)
                } else if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
                    (Algorithm::EdDSA, key)
                } else {
                    return Err(AuthConfigError::BadKey(path.clone()));
                }
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECONDS;
        validation.set_required_spec_claims(&["exp"]);
        match &auth.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &auth.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        auth.decoding = Some((key, validation));
        Ok(auth)
    }

    /// The caller of a request that presented `token` (or none).
    pub fn caller(&self, token: Option<&str>) -> Result<Caller, AuthError> {
        let Some((key, validation)) = &self.decoding else {
            return Ok(Caller::Anyone);
        };
        let token = token.ok_or(AuthError::Unauthorized("a bearer token is required"))?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    AuthError::Unauthorized("the token has expired")
                }
                _ => AuthError::Unauthorized("the token is invalid"),
            })?
            .claims;
        let scoped = match claims.role {
            Role::Admin | Role::Service => true,
            Role::Participant => claims.sid.is_some() && claims.pid.is_some(),
            Role::Viewer => claims.sid.is_some(),
        };
        if !scoped {
            return Err(AuthError::Unauthorized(
                "participant and viewer tokens need sid (and pid)",
            ));
        }
        Ok(Caller::Token(claims))
    }

    /// Mints a participant or viewer token for `session`, valid for `ttl`.
    /// Only with `JWT_SECRET` (the server never holds a private key).
    pub fn mint(
        &self,
        session: SessionId,
        role: Role,
        participant: Option<ParticipantId>,
        ttl: Duration,
    ) -> Result<(String, u64), AuthError> {
        let key = self.encoding.as_ref().ok_or(AuthError::Forbidden(
            "this server does not mint tokens: it needs AUTH_MODE=jwt with JWT_SECRET",
        ))?;
        let now = unix_now();
        let exp = now + ttl.as_secs();
        let claims = Claims {
            sub: Some(match participant {
                Some(p) => format!("participant:{p}"),
                None => format!("viewer:{session}"),
            }),
            role,
            sid: Some(session),
            pid: participant,
            exp,
            iat: Some(now),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .map(|t| (t, exp))
            .map_err(|_| AuthError::Forbidden("the token could not be signed"))
    }
}

impl Caller {
    /// Creating, deleting and driving sessions (all but switch): admin or service.
    pub fn operate(&self) -> Result<(), AuthError> {
        match self {
            Caller::Anyone => Ok(()),
            Caller::Token(c) if matches!(c.role, Role::Admin | Role::Service) => Ok(()),
            Caller::Token(_) => Err(AuthError::Forbidden("this needs an admin or service token")),
        }
    }

    /// Reading or watching `session`: any role scoped to it.
    pub fn read(&self, session: SessionId) -> Result<(), AuthError> {
        match self {
            Caller::Anyone => Ok(()),
            Caller::Token(c) => match c.role {
                Role::Admin | Role::Service => Ok(()),
                Role::Participant | Role::Viewer if c.sid == Some(session) => Ok(()),
                _ => Err(AuthError::Forbidden("the token is for another session")),
            },
        }
    }

    /// Switching `session`: `Ok(None)` for callers who may switch any turn,
    /// `Ok(Some(pid))` for a participant, who may only pass on its own.
    pub fn switch(&self, session: SessionId) -> Result<Option<ParticipantId>, AuthError> {
        self.read(session)?;
        match self {
            Caller::Token(c) if c.role == Role::Participant => Ok(c.pid),
            Caller::Token(c) if c.role == Role::Viewer => {
                Err(AuthError::Forbidden("a viewer token cannot switch"))
            }
            _ => Ok(None),
        }
    }

    /// When the caller's credentials stop being valid (a socket is closed then).
    pub fn expires_at(&self) -> Option<SystemTime> {
        match self {
            Caller::Anyone => None,
            Caller::Token(c) => Some(UNIX_EPOCH + Duration::from_secs(c.exp)),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
