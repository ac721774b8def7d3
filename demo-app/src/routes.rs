//! The HTTP handlers.
//!
//! Each cached read goes through `cached_read`, which runs it inside
//! [`cache_runtime::track_outcome`] to learn whether Redis answered, and says
//! so in an `X-Cache: HIT` or `X-Cache: MISS` header. Every error, including
//! the ones actix's extractors produce for bad input, is a JSON body
//! `{"error": "…"}` with a 4xx status; a 5xx means the database failed.

use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use actix_web::error::{JsonPayloadError, PathError};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use cache_runtime::{Outcome, track_outcome};
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

/// `GET /healthz`: 200 while the database answers, even with Redis down,
/// because the app still works without it (slower); 503 otherwise.
async fn healthz(repo: web::Data<Repo>) -> HttpResponse {
    let ping = actix_web::rt::time::timeout(Duration::from_secs(2), repo.db().ping()).await;
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
    let redis_up = repo.cache().is_connected();
    let (status, summary) = match (database_up, redis_up) {
        (true, true) => (StatusCode::OK, "ok"),
        // Slower, but every endpoint works: not a reason to take the app
        // out of a load balancer.
        (true, false) => (StatusCode::OK, "degraded"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "down"),
    };
    let up_down = |up: bool| if up { "up" } else { "down" };
    HttpResponse::build(status).json(json!({
        "status": summary,
        "database": up_down(database_up),
        "backend": repo.db().backend(),
        "redis": up_down(redis_up),
    }))
}

/// `GET /metrics`: the cache's counters, in Prometheus' text format.
async fn metrics(repo: web::Data<Repo>) -> HttpResponse {
    let text = crate::metrics::render(repo.cache().is_connected());
    HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(text)
}

/// Runs a cached read, turns its result into a response with `respond`, and
/// adds the `X-Cache` header, errors included.
async fn cached_read<T>(
    read: impl Future<Output = Result<T, RepoError>>,
    respond: impl FnOnce(T) -> HttpResponse,
) -> HttpResponse {
    let (result, outcome) = track_outcome(read).await;
    let mut response = match result {
        Ok(value) => respond(value),
        Err(error) => ApiError::from(error).error_response(),
    };
    // `Outcome::Error` (Redis unreachable) also ran the query: a miss.
    // A local-tier hit is a hit too: the database was not asked.
    let value = if matches!(outcome, Some(Outcome::Hit | Outcome::Local)) {
        "HIT"
    } else {
        "MISS"
    };
    response.headers_mut().insert(
        header::HeaderName::from_static("x-cache"),
        HeaderValue::from_static(value),
    );
    response
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
