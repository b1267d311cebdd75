//! Admin token signing keys published at a JWKS URL (`ROSTER_JWT_JWKS_URL`).
//!
//! The set is fetched on first use and cached. It is fetched again when it is older than the
//! TTL, and when a token names a key id the cache does not hold (the identity provider rotated
//! its keys) — but never twice within the cooldown, so tokens with made-up key ids cannot make
//! Roster hammer the identity provider. When a fetch fails the previous keys stay in use.
//! Keys other than RS256 and ES256 signing keys are skipped.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::sync::Mutex;

/// Longest wait for the identity provider to answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A key that may verify admin tokens.
#[derive(Clone)]
pub struct VerifyingKey {
    /// The JWKS `kid`; `None` for keys configured as PEM.
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// Why the JWKS could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Refused at startup.
    #[error("not an http or https URL")]
    BadUrl,
    /// Refused at startup.
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    /// No key set has been fetched yet and the last attempt failed: admin requests signed
    /// with these keys answer 503 until a fetch succeeds.
    #[error("the key set has not been fetched")]
    Unavailable,
}

#[derive(Default)]
struct Cached {
    keys: Vec<VerifyingKey>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
}

/// The cached key set of one JWKS URL.
pub struct Jwks {
    url: reqwest::Url,
    client: reqwest::Client,
    ttl: Duration,
    cooldown: Duration,
    // Admin traffic is light: one lock held across a fetch keeps concurrent requests from
    // fetching the same set twice.
    cached: Mutex<Cached>,
}

impl Jwks {
    pub fn new(url: &str, ttl: Duration, cooldown: Duration) -> Result<Self, JwksError> {
        let url = reqwest::Url::parse(url).map_err(|_| JwksError::BadUrl)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(JwksError::BadUrl);
        }
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(JwksError::Client)?;
        Ok(Jwks {
            url,
            client,
            ttl,
            cooldown,
            cached: Mutex::new(Cached::default()),
        })
    }

    /// The keys that may have signed a token with this `kid` (any, when it has none) and `alg`.
    pub async fn keys_for(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<Vec<VerifyingKey>, JwksError> {
        let mut cached = self.cached.lock().await;
        let expired = cached.fetched_at.is_none_or(|at| at.elapsed() >= self.ttl);
        if expired {
            self.refresh(&mut cached).await;
        }
        let mut found = matching(&cached.keys, kid, algorithm);
        if found.is_empty() && kid.is_some() {
            self.refresh(&mut cached).await;
            found = matching(&cached.keys, kid, algorithm);
        }
        if cached.fetched_at.is_none() {
            return Err(JwksError::Unavailable);
        }
        Ok(found)
    }

    /// Fetches the set again unless the last attempt was within the cooldown.
    async fn refresh(&self, cached: &mut Cached) {
        if cached
            .attempted_at
            .is_some_and(|at| at.elapsed() < self.cooldown)
        {
            return;
        }
        cached.attempted_at = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "fetched the admin token JWKS");
                cached.keys = keys;
                cached.fetched_at = Some(Instant::now());
            }
            Err(e) => tracing::warn!(error = %e, "cannot fetch the admin token JWKS"),
        }
    }

    async fn fetch(&self) -> Result<Vec<VerifyingKey>, reqwest::Error> {
        let set: KeySet = self
            .client
            .get(self.url.clone())
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(set.keys.into_iter().filter_map(signing_key).collect())
    }
}

/// A JWKS as published; each key is parsed on its own so one unusual key cannot hide the rest.
#[derive(Deserialize)]
struct KeySet {
    keys: Vec<serde_json::Value>,
}

fn matching(keys: &[VerifyingKey], kid: Option<&str>, algorithm: Algorithm) -> Vec<VerifyingKey> {
    keys.iter()
        .filter(|key| key.algorithm == algorithm)
        .filter(|key| kid.is_none() || key.kid.as_deref() == kid)
        .cloned()
        .collect()
}

/// The key as an RS256 or ES256 verifying key, or `None` for anything else.
fn signing_key(raw: serde_json::Value) -> Option<VerifyingKey> {
    let jwk: Jwk = serde_json::from_value(raw).ok()?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
        (Some(KeyAlgorithm::RS256), AlgorithmParameters::RSA(_)) => Algorithm::RS256,
        (Some(KeyAlgorithm::ES256), AlgorithmParameters::EllipticCurve(ec))
            if ec.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
        (None, AlgorithmParameters::EllipticCurve(ec)) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        _ => return None,
    };
    Some(VerifyingKey {
        key: DecodingKey::from_jwk(&jwk).ok()?,
        kid: jwk.common.key_id,
        algorithm,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex as StdMutex};

    use poem::listener::{Acceptor, Listener, TcpListener};
    use poem::web::Data;
    use poem::{handler, EndpointExt, Route, Server};
    use serde_json::{json, Value};

    use super::*;

    /// A P-256 public key (the RFC 7515 appendix A.3 example).
    fn ec_key(kid: &str) -> Value {
        json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
        })
    }

    #[derive(Clone)]
    struct Published {
        keys: Arc<StdMutex<Vec<Value>>>,
        fetches: Arc<AtomicUsize>,
    }

    #[handler]
    fn serve_jwks(published: Data<&Published>) -> poem::web::Json<Value> {
        published.fetches.fetch_add(1, Ordering::SeqCst);
        let keys = published.keys.lock().unwrap().clone();
        poem::web::Json(json!({ "keys": keys }))
    }

    async fn publish(keys: Vec<Value>) -> (String, Published) {
        let published = Published {
            keys: Arc::new(StdMutex::new(keys)),
            fetches: Arc::new(AtomicUsize::new(0)),
        };
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
        let app = Route::new().at("/jwks", serve_jwks).data(published.clone());
        tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
        (format!("http://{addr}/jwks"), published)
    }

    #[tokio::test]
    async fn keys_are_fetched_once_and_cached() {
        let (url, published) = publish(vec![ec_key("a")]).await;
        let jwks = Jwks::new(&url, Duration::from_secs(600), Duration::ZERO).unwrap();

        let first = jwks.keys_for(Some("a"), Algorithm::ES256).await.unwrap();
        let second = jwks.keys_for(Some("a"), Algorithm::ES256).await.unwrap();

        assert_eq!(first.len(), 1);
        assert_eq!(second.len(), 1);
        assert_eq!(published.fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_unknown_kid_refreshes_the_set() {
        let (url, published) = publish(vec![ec_key("old")]).await;
        let jwks = Jwks::new(&url, Duration::from_secs(600), Duration::ZERO).unwrap();
        jwks.keys_for(Some("old"), Algorithm::ES256).await.unwrap();

        published.keys.lock().unwrap().push(ec_key("new"));
        let rotated = jwks.keys_for(Some("new"), Algorithm::ES256).await.unwrap();

        assert_eq!(rotated.len(), 1);
        assert_eq!(rotated[0].kid.as_deref(), Some("new"));
        assert_eq!(published.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn made_up_kids_do_not_refetch_within_the_cooldown() {
        let (url, published) = publish(vec![ec_key("a")]).await;
        let jwks = Jwks::new(&url, Duration::from_secs(600), Duration::from_secs(60)).unwrap();

        for kid in ["x", "y", "z"] {
            let found = jwks.keys_for(Some(kid), Algorithm::ES256).await.unwrap();
            assert!(found.is_empty());
        }

        assert_eq!(published.fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_unreachable_set_is_unavailable() {
        let jwks = Jwks::new(
            "http://127.0.0.1:9/jwks",
            Duration::from_secs(600),
            Duration::ZERO,
        )
        .unwrap();

        let verdict = jwks.keys_for(Some("a"), Algorithm::ES256).await;

        assert!(matches!(verdict, Err(JwksError::Unavailable)));
    }

    #[test]
    fn only_rs256_and_es256_signing_keys_are_kept() {
        let mut encryption = ec_key("enc");
        encryption["use"] = json!("enc");
        let mut p384 = ec_key("p384");
        p384["crv"] = json!("P-384");
        p384["alg"] = json!("ES384");
        let symmetric = json!({ "kty": "oct", "k": "c2VjcmV0", "alg": "HS256" });
        let unknown = json!({ "kty": "weird" });

        assert!(signing_key(ec_key("sig")).is_some());
        for key in [encryption, p384, symmetric, unknown] {
            assert!(signing_key(key.clone()).is_none(), "{key} kept");
        }
    }

    #[test]
    fn urls_must_be_http() {
        let ttl = Duration::from_secs(1);

        assert!(Jwks::new("ftp://idp/jwks", ttl, ttl).is_err());
        assert!(Jwks::new("not a url", ttl, ttl).is_err());
    }
}
