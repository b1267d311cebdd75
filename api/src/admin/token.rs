//! Admin bearer tokens: checking them against the configured issuer, audience and keys, and
//! minting development tokens with the HS256 secret.
//!
//! Keys come from three places, all optional: `ROSTER_JWT_HS256_SECRET` (HS256, development),
//! `ROSTER_JWT_PUBLIC_KEYS` (PEM, RS256 or ES256) and `ROSTER_JWT_JWKS_URL` (see [`super::jwks`]).
//! A token's `alg` decides which of them may verify it, so an HS256 token can never be checked
//! against a public key, nor an RS256 one against the secret.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::Utc;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::auth::Access;
use super::error::AdminError;
use super::jwks::{Jwks, JwksError, VerifyingKey};
use crate::config::AdminAuthConfig;

/// Shortest HS256 secret accepted: HS256 keys should carry at least 256 bits.
const MIN_SECRET_BYTES: usize = 32;
/// How long keys fetched from the JWKS URL are trusted before they are fetched again.
const JWKS_TTL: Duration = Duration::from_secs(600);
/// The least time between two JWKS fetches, whatever tokens arrive.
const JWKS_COOLDOWN: Duration = Duration::from_secs(30);

/// The claims Roster reads from an admin token (besides `iss`, `aud`, `exp` and `nbf`, which
/// the validation checks).
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub tenant: Option<String>,
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The admin API answers 401; the reason is logged, not returned.
    #[error("admin token refused: {0}")]
    Invalid(&'static str),
    /// The JWKS could not be fetched and no other key could verify the token: 503.
    #[error("the admin token signing keys cannot be fetched")]
    KeysUnavailable,
}

impl From<TokenError> for AdminError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::Invalid(reason) => {
                tracing::info!(reason, "admin token refused");
                AdminError::Unauthorized
            }
            TokenError::KeysUnavailable => {
                AdminError::Unavailable("the admin token signing keys cannot be fetched")
            }
        }
    }
}

/// Why the token configuration was refused at startup.
#[derive(Debug, thiserror::Error)]
pub enum TokenConfigError {
    #[error("ROSTER_JWT_HS256_SECRET must be at least {MIN_SECRET_BYTES} bytes long")]
    ShortSecret,
    #[error("ROSTER_JWT_PUBLIC_KEYS holds no PEM block")]
    NoPublicKey,
    #[error("ROSTER_JWT_PUBLIC_KEYS block {0} is not an RSA or EC public key in PEM")]
    BadPublicKey(usize),
    #[error("ROSTER_JWT_JWKS_URL: {0}")]
    Jwks(#[from] JwksError),
}

/// Checks admin tokens; built once from the configuration and shared by every request.
pub struct TokenVerifier {
    issuer: String,
    audience: String,
    leeway_secs: u64,
    hs256: Option<DecodingKey>,
    public_keys: Vec<VerifyingKey>,
    jwks: Option<Jwks>,
}

impl TokenVerifier {
    pub fn from_config(config: &AdminAuthConfig) -> Result<Self, TokenConfigError> {
        let hs256 = match &config.jwt_hs256_secret {
            Some(secret) if !secret.is_empty() => Some(hs256_decoding_key(secret.expose())?),
            _ => None,
        };
        let public_keys = match &config.jwt_public_keys {
            Some(pem) if !pem.trim().is_empty() => parse_public_keys(pem)?,
            _ => Vec::new(),
        };
        let jwks = match &config.jwt_jwks_url {
            Some(url) if !url.trim().is_empty() => {
                Some(Jwks::new(url.trim(), JWKS_TTL, JWKS_COOLDOWN)?)
            }
            _ => None,
        };
        if hs256.is_none() && public_keys.is_empty() && jwks.is_none() {
            tracing::warn!(
                "no admin token keys configured (ROSTER_JWT_*): every admin API request \
                 will be refused"
            );
        }
        Ok(TokenVerifier {
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            leeway_secs: config.jwt_leeway_secs,
            hs256,
            public_keys,
            jwks,
        })
    }

    /// The claims of a token signed by a configured key, issued by the configured issuer for
    /// the configured audience, and valid now (within the leeway).
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid("malformed"))?;
        let keys = self.keys_for(&header).await?;
        let validation = self.validation(header.alg);

        for key in &keys {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) if data.claims.sub.trim().is_empty() => {
                    return Err(TokenError::Invalid("empty subject"))
                }
                Ok(data) => return Ok(data.claims),
                // Another configured key may have signed it.
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
                Err(e) => return Err(TokenError::Invalid(refusal_reason(e.kind()))),
            }
        }
        Err(TokenError::Invalid(
            "no configured key verifies the signature",
        ))
    }

    /// The keys that may have signed a token with this header.
    async fn keys_for(&self, header: &Header) -> Result<Vec<DecodingKey>, TokenError> {
        match header.alg {
            Algorithm::HS256 => Ok(self.hs256.iter().cloned().collect()),
            Algorithm::RS256 | Algorithm::ES256 => {
                let mut keys: Vec<DecodingKey> = self
                    .public_keys
                    .iter()
                    .filter(|key| key.algorithm == header.alg)
                    .map(|key| key.key.clone())
                    .collect();
                if let Some(jwks) = &self.jwks {
                    match jwks.keys_for(header.kid.as_deref(), header.alg).await {
                        Ok(found) => keys.extend(found.into_iter().map(|key| key.key)),
                        Err(_) if !keys.is_empty() => {}
                        Err(_) => return Err(TokenError::KeysUnavailable),
                    }
                }
                Ok(keys)
            }
            _ => Err(TokenError::Invalid("algorithm not accepted")),
        }
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway_secs;
        validation
    }
}

fn hs256_decoding_key(secret: &str) -> Result<DecodingKey, TokenConfigError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(TokenConfigError::ShortSecret);
    }
    Ok(DecodingKey::from_secret(secret.as_bytes()))
}

/// Every PEM block of `pem` as an RS256 or ES256 key.
fn parse_public_keys(pem: &str) -> Result<Vec<VerifyingKey>, TokenConfigError> {
    let blocks = pem_blocks(pem);
    if blocks.is_empty() {
        return Err(TokenConfigError::NoPublicKey);
    }
    blocks
        .iter()
        .enumerate()
        .map(|(index, block)| {
            parse_public_key(block).ok_or(TokenConfigError::BadPublicKey(index + 1))
        })
        .collect()
}

fn parse_public_key(block: &str) -> Option<VerifyingKey> {
    let (algorithm, key) = match DecodingKey::from_rsa_pem(block.as_bytes()) {
        Ok(key) => (Algorithm::RS256, key),
        Err(_) => (
            Algorithm::ES256,
            DecodingKey::from_ec_pem(block.as_bytes()).ok()?,
        ),
    };
    Some(VerifyingKey {
        kid: None,
        algorithm,
        key,
    })
}

/// Splits concatenated PEM text into its `-----BEGIN ...-----` ... `-----END ...-----` blocks.
fn pem_blocks(pem: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in pem.lines().map(str::trim) {
        if line.starts_with("-----BEGIN ") {
            current = Some(String::new());
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
        if line.starts_with("-----END ") {
            blocks.extend(current.take());
        }
    }
    blocks
}

fn refusal_reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not yet valid",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
        ErrorKind::InvalidAlgorithm => "algorithm does not match the key",
        _ => "malformed",
    }
}

/// A development token to mint with the HS256 secret.
#[derive(Debug)]
pub struct TokenRequest<'a> {
    pub subject: &'a str,
    pub access: Access,
    pub tenant: Option<&'a str>,
    pub ttl: Duration,
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error(
        "ROSTER_JWT_HS256_SECRET is not set: development tokens are signed with it \
         (production tokens come from your identity provider)"
    )]
    NoSecret,
    #[error(transparent)]
    Config(#[from] TokenConfigError),
    #[error("the token could not be signed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

#[derive(Serialize)]
struct MintedClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    roles: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    iat: i64,
    nbf: i64,
    exp: i64,
}

/// Signs a token with the configured HS256 secret, for development and support tooling.
pub fn mint_hs256(
    config: &AdminAuthConfig,
    request: &TokenRequest<'_>,
) -> Result<String, MintError> {
    let secret = config
        .jwt_hs256_secret
        .as_ref()
        .filter(|secret| !secret.is_empty())
        .ok_or(MintError::NoSecret)?;
    hs256_decoding_key(secret.expose())?;

    let now = Utc::now().timestamp();
    let ttl = i64::try_from(request.ttl.as_secs()).unwrap_or(i64::MAX);
    let claims = MintedClaims {
        iss: &config.jwt_issuer,
        aud: &config.jwt_audience,
        sub: request.subject,
        roles: [request.access.role()],
        tenant: request.tenant,
        iat: now,
        nbf: now,
        exp: now.saturating_add(ttl),
    };
    let key = EncodingKey::from_secret(secret.expose().as_bytes());
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &key,
    )?)
}

/// A random HS256 secret for a `roster dev` process that has none configured.
pub fn generate_dev_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    const SECRET: &str = "unit-test-secret-unit-test-secret-0123";

    fn config() -> AdminAuthConfig {
        AdminAuthConfig {
            jwt_issuer: "issuer".to_owned(),
            jwt_audience: "audience".to_owned(),
            jwt_hs256_secret: Some(SECRET.parse::<Secret>().unwrap()),
            jwt_public_keys: None,
            jwt_jwks_url: None,
            jwt_leeway_secs: 0,
        }
    }

    fn request(access: Access) -> TokenRequest<'static> {
        TokenRequest {
            subject: "alice",
            access,
            tenant: Some("acme"),
            ttl: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn minted_tokens_verify() {
        let config = config();
        let token = mint_hs256(&config, &request(Access::Write)).unwrap();

        let claims = TokenVerifier::from_config(&config)
            .unwrap()
            .verify(&token)
            .await
            .unwrap();

        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.roles, ["roster:write"]);
        assert_eq!(claims.tenant.as_deref(), Some("acme"));
    }

    #[tokio::test]
    async fn another_issuer_or_audience_is_refused() {
        let token = mint_hs256(&config(), &request(Access::Read)).unwrap();
        let mut other_issuer = config();
        other_issuer.jwt_issuer = "someone-else".to_owned();
        let mut other_audience = config();
        other_audience.jwt_audience = "another-service".to_owned();

        for config in [other_issuer, other_audience] {
            let verdict = TokenVerifier::from_config(&config)
                .unwrap()
                .verify(&token)
                .await;
            assert!(
                matches!(verdict, Err(TokenError::Invalid(_))),
                "{verdict:?}"
            );
        }
    }

    #[tokio::test]
    async fn garbage_and_unsigned_tokens_are_refused() {
        let verifier = TokenVerifier::from_config(&config()).unwrap();
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"x","exp":99999999999}"#)
        );

        for token in ["", "not-a-jwt", "a.b.c", unsigned.as_str()] {
            assert!(verifier.verify(token).await.is_err(), "{token:?} accepted");
        }
    }

    #[test]
    fn short_secrets_and_bad_pem_are_refused_at_startup() {
        let mut short = config();
        short.jwt_hs256_secret = Some("short".parse().unwrap());
        let mut bad_pem = config();
        bad_pem.jwt_public_keys =
            Some("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----".to_owned());
        let mut no_pem = config();
        no_pem.jwt_public_keys = Some("just text".to_owned());

        assert!(matches!(
            TokenVerifier::from_config(&short),
            Err(TokenConfigError::ShortSecret)
        ));
        assert!(matches!(
            TokenVerifier::from_config(&bad_pem),
            Err(TokenConfigError::BadPublicKey(1))
        ));
        assert!(matches!(
            TokenVerifier::from_config(&no_pem),
            Err(TokenConfigError::NoPublicKey)
        ));
    }

    #[test]
    fn minting_needs_a_secret() {
        let mut config = config();
        config.jwt_hs256_secret = None;

        assert!(matches!(
            mint_hs256(&config, &request(Access::Read)),
            Err(MintError::NoSecret)
        ));
    }

    #[test]
    fn pem_text_splits_into_blocks() {
        let text = "junk\n-----BEGIN PUBLIC KEY-----\nAB\n-----END PUBLIC KEY-----\n\
                    -----BEGIN PUBLIC KEY-----\nCD\n-----END PUBLIC KEY-----\n";

        let blocks = pem_blocks(text);

        assert_eq!(blocks.len(), 2);
        assert!(blocks[1].contains("CD"));
    }

    #[test]
    fn dev_secrets_are_random_and_long_enough() {
        let a = generate_dev_secret();

        assert_ne!(a, generate_dev_secret());
        assert!(a.len() >= MIN_SECRET_BYTES);
    }
}
