//! The HTTP handlers.
//!
//! Each cached read goes through `cached_read`, which runs it inside
//! [`cache_runtime::track_outcome`] to learn how the cache answered, and
//! says so in three headers (see `cache_headers`): `X-Cache: HIT` or
//! `MISS`, `X-Cache-Tier: local` or `redis` on a hit, and `X-Cache-Outcome`,
//! the runtime's name for the outcome. Every error, including the ones
//! actix's extractors produce for bad input, is a JSON body
//! `{"error": "…"}` with a 4xx status; a 5xx means the database failed.
//!
//! The page at `/` (`static/index.html`) reads those headers, and polls
//! `GET /stats` for the live counters.

use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use actix_web::error::{JsonPayloadError, PathError};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use cache_runtime::{Cache, ConnectionStatus, Outcome, track_outcome};
use serde_json::json;

use crate::model::{NewUser, RepoError, User};
use crate::repo::Repo;

/// Registers the routes. The app needs a `web::Data<Repo>`:
///
/// ```no_run
/// # use actix_web::{App, web};
/// # fn app(repo: demo_app::repo::Repo) {
/// App::new()
///     .app_data(web::Data::new(repo))
///     .configure(demo_app::routes::configure);
/// # }
/// ```
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::Data::from(EncodedUsers::shared()))
        .app_data(web::PathConfig::default().error_handler(bad_path))
        .app_data(web::JsonConfig::default().error_handler(bad_json))
        .service(
            web::resource("/")
                .get(index)
                .default_service(web::to(not_allowed)),
        )
        .service(
            web::resource("/users")
                .get(list_users)
                .post(create_user)
                .patch(update_users)
                .default_service(web::to(not_allowed)),
        )
        .service(
            web::resource("/users/{id}")
                .get(get_user)
                .put(update_user)
                .delete(delete_user)
                .default_service(web::to(not_allowed)),
        )
        .service(
            web::resource("/favicon.ico")
                .get(favicon)
                .default_service(web::to(not_allowed)),
        )
        .service(
            web::resource("/favicon.svg")
                .get(favicon)
                .default_service(web::to(not_allowed)),
        )
        .service(
            web::resource("/cache/users")
                .delete(evict_users)
                .default_service(web::to(not_allowed)),
        )
        .service(
            web::resource("/stats")
                .get(stats)
                .default_service(web::to(not_allowed)),
        )
        .service(
            web::resource("/healthz")
                .get(healthz)
                .default_service(web::to(not_allowed)),
        )
        .service(
            web::resource("/metrics")
                .get(metrics)
                .default_service(web::to(not_allowed)),
        )
        .default_service(web::to(not_found));
}

/// `GET /users`: the whole table, the blog post's query.
async fn list_users(repo: web::Data<Repo>, encoded: web::Data<EncodedUsers>) -> HttpResponse {
    cached_read(repo.list_users(), |users| match encoded.body(&users) {
        Ok(body) => HttpResponse::Ok()
            .content_type(header::ContentType::json())
            .body(body),
        Err(error) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the users: {error}"),
        )
        .error_response(),
    })
    .await
}

/// The last `/users` body, and the list it encodes.
///
/// A local-tier hit hands out the very `Arc` it kept, until a write evicts
/// the list: the same list, so the same JSON. Encoding 100 000 users takes
/// longer than everything else a hit does (about 20 ms against 12 µs), so
/// the body is encoded once per list rather than once per request. The
/// `Weak` keeps the list's allocation, so no later list can reuse its
/// address and pass for it.
#[derive(Default)]
pub struct EncodedUsers(Mutex<Option<(Weak<Vec<User>>, web::Bytes)>>);

impl EncodedUsers {
    /// The process's one: the local tier is the process's, and so is the
    /// `Arc` it hands out, to every Actix worker. One per worker would
    /// encode the same list once per worker.
    fn shared() -> Arc<EncodedUsers> {
        static SHARED: std::sync::LazyLock<Arc<EncodedUsers>> =
            std::sync::LazyLock::new(Arc::default);
        SHARED.clone()
    }

    fn body(&self, users: &Arc<Vec<User>>) -> serde_json::Result<web::Bytes> {
        if let Some((list, body)) = &*self.lock()
            && Weak::ptr_eq(list, &Arc::downgrade(users))
        {
            return Ok(body.clone());
        }
        // Encoded outside the lock: requests for other lists need not wait.
        let body = web::Bytes::from(serde_json::to_vec(&**users)?);
        *self.lock() = Some((Arc::downgrade(users), body.clone()));
        Ok(body)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Weak<Vec<User>>, web::Bytes)>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `GET /users/{id}`
async fn get_user(repo: web::Data<Repo>, id: web::Path<i64>) -> HttpResponse {
    let id = id.into_inner();
    cached_read(repo.get_user(id), |user| HttpResponse::Ok().json(user)).await
}

/// `POST /users`: 201 with the new user, and its URL in `Location`.
async fn create_user(
    repo: web::Data<Repo>,
    new: web::Json<NewUser>,
) -> Result<HttpResponse, ApiError> {
    let user = repo.create_user(&new).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/users/{}", user.id)))
        .json(user))
}

/// `PUT /users/{id}`: replaces both fields; 200 with the updated user.
async fn update_user(
    repo: web::Data<Repo>,
    id: web::Path<i64>,
    new: web::Json<NewUser>,
) -> Result<HttpResponse, ApiError> {
    let user = repo.update_user(id.into_inner(), &new).await?;
    Ok(HttpResponse::Ok().json(user))
}

/// `PATCH /users`: replaces the fields of each user listed, all or nothing,
/// in one transaction; 200 with the updated users. An unknown id (404) or a
/// taken email (409) changes no one.
async fn update_users(
    repo: web::Data<Repo>,
    users: web::Json<Vec<User>>,
) -> Result<HttpResponse, ApiError> {
    let users = repo.update_users(&users).await?;
    Ok(HttpResponse::Ok().json(users))
}

/// `DELETE /users/{id}`: 204.
async fn delete_user(repo: web::Data<Repo>, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    repo.delete_user(id.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /`: a page to try the cache from a browser. The table size is a
/// cached read like the others.
async fn index(repo: web::Data<Repo>) -> HttpResponse {
    const PAGE: &str = include_str!("../static/index.html");
    let backend = repo.db().backend();
    cached_read(repo.count_users(), |count| {
        let page = PAGE
            .replace("{{USER_COUNT}}", &count.to_string())
            .replace("{{BACKEND}}", backend);
        HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(page)
    })
    .await
}

/// `GET /favicon.ico` and `/favicon.svg`: the page's icon, an SVG (the
/// page links it; browsers that ask for `/favicon.ico` anyway get it too).
async fn favicon() -> HttpResponse {
    const ICON: &str = include_str!("../static/favicon.svg");
    HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header((header::CACHE_CONTROL, "public, max-age=86400"))
        .body(ICON)
}

/// `DELETE /cache/users`: evicts the cached list, as a write does, without
/// changing the table; the page's "Evict the list" button. 200 once Redis
/// has deleted it (and every process's local tier dropped its copy); 202
/// when Redis could not be reached: the runtime then parks the eviction and
/// retries it, and this process's reads skip the cache until it has.
async fn evict_users(repo: web::Data<Repo>) -> HttpResponse {
    match repo.evict_users_list().await {
        Ok(()) => HttpResponse::Ok().json(json!({"key": "users:all", "evicted": true})),
        // Not the error's text: it may name the Redis server.
        Err(_) => HttpResponse::Accepted().json(json!({
            "key": "users:all",
            "evicted": false,
            "parked": true,
        })),
    }
}

/// `GET /stats`: the live counters the page shows, every second.
///
/// ```json
/// {"redis": "up", "local_tier": {"entries": 1, "bytes": 1376256, "listening": true},
///  "hit_ratio": 0.9,
///  "functions": [{"function": "demo_app::repo::list_users", "calls": 10,
///                 "hits": {"local": 8, "redis": 1, "stale": 0},
///                 "misses": 1, "errors": 0, "hit_ratio": 0.9}]}
/// ```
///
/// The counters are this process's, read from the recorder the cache
/// records into (the ones `/metrics` shows), so they keep counting while
/// Redis is down. `redis` is what `/healthz` says; `local_tier` is `null`
/// until the tier has started. A hit ratio is hits (any tier) over calls,
/// `null` before the first call.
async fn stats(repo: web::Data<Repo>) -> HttpResponse {
    let redis = redis_state(repo.cache()).await;
    let functions = crate::metrics::per_function();
    let ratio = |hits: u64, calls: u64| (calls > 0).then(|| hits as f64 / calls as f64);
    let (hits, calls) = functions.iter().fold((0, 0), |(hits, calls), f| {
        (hits + f.all_hits(), calls + f.calls)
    });
    let functions: Vec<serde_json::Value> = functions
        .iter()
        .map(|f| {
            let mut row = json!(f);
            row["hit_ratio"] = json!(ratio(f.all_hits(), f.calls));
            row
        })
        .collect();
    let local_tier = repo.cache().local_tier_status().map(
        |tier| json!({"entries": tier.entries, "bytes": tier.bytes, "listening": tier.listening}),
    );
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "redis": redis,
            "local_tier": local_tier,
            "hit_ratio": ratio(hits, calls),
            "functions": functions,
        }))
}

/// How long a check waits for this worker's first connection attempt to
/// Redis (each Actix worker connects at its first request): a local Redis
/// answers in a millisecond, and an attempt lasts at most the cache's
/// connect timeout (1 s).
const FIRST_ATTEMPT_WAIT: Duration = Duration::from_secs(1);

/// This worker's connection to Redis, as `/healthz` and `/stats` report
/// it: `"up"`, `"down"`, or `"connecting"` while its first attempt has not
/// ended within [`FIRST_ATTEMPT_WAIT`].
async fn redis_state(cache: &Cache) -> &'static str {
    match cache.settled_connection_status(FIRST_ATTEMPT_WAIT).await {
        ConnectionStatus::Connected => "up",
        ConnectionStatus::Connecting => "connecting",
        _ => "down",
    }
}

/// `GET /healthz`: 200 while the database answers, even with Redis down,
/// because the app still works without it (slower); 503 otherwise.
async fn healthz(repo: web::Data<Repo>) -> HttpResponse {
    let ping = actix_web::rt::time::timeout(Duration::from_secs(2), repo.db().ping());
    let (ping, redis) = tokio::join!(ping, redis_state(repo.cache()));
    let database_up = match ping {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::warn!("health check: the database is down: {error}");
            false
        }
        Err(_) => {
            tracing::warn!("health check: the database did not answer within 2 s");
            false
        }
    };
    let (status, summary) = match (database_up, redis) {
        (true, "up") => (StatusCode::OK, "ok"),
        // Slower, but every endpoint works: not a reason to take the app
        // out of a load balancer.
        (true, _) => (StatusCode::OK, "degraded"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "down"),
    };
    HttpResponse::build(status).json(json!({
        "status": summary,
        "database": if database_up { "up" } else { "down" },
        "backend": repo.db().backend(),
        "redis": redis,
    }))
}

/// `GET /metrics`: the cache's counters, in Prometheus' text format.
async fn metrics(repo: web::Data<Repo>) -> HttpResponse {
    let connected = redis_state(repo.cache()).await == "up";
    let text = crate::metrics::render(connected);
    HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(text)
}

/// Runs a cached read, turns its result into a response with `respond`, and
/// adds the cache's headers (see [`cache_headers`]), errors included.
async fn cached_read<T>(
    read: impl Future<Output = Result<T, RepoError>>,
    respond: impl FnOnce(T) -> HttpResponse,
) -> HttpResponse {
    let (result, outcome) = track_outcome(read).await;
    let mut response = match result {
        Ok(value) => respond(value),
        Err(error) => ApiError::from(error).error_response(),
    };
    let (cache, tier) = cache_headers(outcome);
    let headers = response.headers_mut();
    headers.insert(
        header::HeaderName::from_static("x-cache"),
        HeaderValue::from_static(cache),
    );
    if let Some(tier) = tier {
        headers.insert(
            header::HeaderName::from_static("x-cache-tier"),
            HeaderValue::from_static(tier),
        );
    }
    if let Some(outcome) = outcome {
        headers.insert(
            header::HeaderName::from_static("x-cache-outcome"),
            HeaderValue::from_static(outcome.as_str()),
        );
    }
    response
}

/// `X-Cache` and `X-Cache-Tier` for a read's outcome: `HIT` when the answer
/// came from the cache, with the tier that held it, `MISS` when it came
/// from the database.
///
/// | outcome | `X-Cache` | `X-Cache-Tier` | the answer |
/// |---|---|---|---|
/// | `Local` | `HIT` | `local` | this process's copy; neither Redis nor the database asked |
/// | `Hit` | `HIT` | `redis` | read from Redis |
/// | `Stale` | `HIT` | `redis` | a stale value from Redis, while a refresh runs |
/// | `FailSafe` | `HIT` | `redis` | the query failed: the last good value, from Redis |
/// | `Miss` | `MISS` | | the query ran |
/// | `Coalesced` | `MISS` | | another request's run of the query |
/// | `Error` | `MISS` | | the query ran: Redis unreachable, or an eviction waiting to be replayed |
/// | `Bypassed` | `MISS` | | the query ran, without the cache |
///
/// `X-Cache-Outcome` names the outcome itself ([`Outcome::as_str`]). The
/// demo's reads have no `stale` nor `fail_safe`, so their answers are the
/// first two and the last four.
fn cache_headers(outcome: Option<Outcome>) -> (&'static str, Option<&'static str>) {
    match outcome {
        Some(Outcome::Local) => ("HIT", Some("local")),
        Some(Outcome::Hit | Outcome::Stale | Outcome::FailSafe) => ("HIT", Some("redis")),
        // Miss, Coalesced, Error, Bypassed, and any outcome a later runtime
        // adds: the page then says only that the cache did not answer.
        _ => ("MISS", None),
    }
}

/// An error response: a status and a message, sent as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(json!({ "error": self.message }))
    }
}

impl From<RepoError> for ApiError {
    fn from(error: RepoError) -> ApiError {
        match error {
            RepoError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "no user has this id"),
            RepoError::DuplicateEmail => {
                ApiError::new(StatusCode::CONFLICT, "another user already has this email")
            }
            RepoError::Invalid(message) => ApiError::new(StatusCode::BAD_REQUEST, message),
            RepoError::Database(error) => {
                tracing::error!("database error: {error}");
                // Not the error's text: it may show SQL or connection details.
                let status = match error {
                    sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                ApiError::new(status, "the database failed; see the server's log")
            }
        }
    }
}

/// A path segment that does not parse: `/users/abc`.
fn bad_path(error: PathError, _: &HttpRequest) -> actix_web::Error {
    let PathError::Deserialize(error) = error else {
        return ApiError::new(StatusCode::BAD_REQUEST, error.to_string()).into();
    };
    ApiError::new(
        StatusCode::BAD_REQUEST,
        format!("the user id must be an integer ({error})"),
    )
    .into()
}

/// A body that is not the JSON expected.
fn bad_json(error: JsonPayloadError, request: &HttpRequest) -> actix_web::Error {
    // `PATCH /users` takes a list of users; the other writes take one.
    let expected = if request.method() == Method::PATCH {
        r#"a list of {"id": …, "username": "…", "email": "…"}"#
    } else {
        r#"{"username": "…", "email": "…"}"#
    };
    let (status, message) = match &error {
        JsonPayloadError::ContentType => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON, sent with `Content-Type: application/json`".to_owned(),
        ),
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            (StatusCode::PAYLOAD_TOO_LARGE, error.to_string())
        }
        // Malformed JSON, a missing field or a field of the wrong type: serde
        // says which, and where.
        JsonPayloadError::Deserialize(error) => (
            StatusCode::BAD_REQUEST,
            format!("the body must be {expected}: {error}"),
        ),
        _ => (StatusCode::BAD_REQUEST, error.to_string()),
    };
    ApiError::new(status, message).into()
}

async fn not_found(request: HttpRequest) -> HttpResponse {
    let message = format!("no route for {} {}", request.method(), request.path());
    ApiError::new(StatusCode::NOT_FOUND, message).error_response()
}

async fn not_allowed(request: HttpRequest) -> HttpResponse {
    let message = format!("{} is not allowed on {}", request.method(), request.path());
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, message).error_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hit_names_its_tier_and_a_miss_none() {
        let headers = |outcome| cache_headers(Some(outcome));
        assert_eq!(headers(Outcome::Local), ("HIT", Some("local")));
        assert_eq!(headers(Outcome::Hit), ("HIT", Some("redis")));
        assert_eq!(headers(Outcome::Stale), ("HIT", Some("redis")));
        assert_eq!(headers(Outcome::FailSafe), ("HIT", Some("redis")));
        for miss in [
            Outcome::Miss,
            Outcome::Coalesced,
            Outcome::Error,
            Outcome::Bypassed,
        ] {
            assert_eq!(headers(miss), ("MISS", None), "{miss:?}");
        }
        assert_eq!(cache_headers(None), ("MISS", None));
    }
}
