//! The public side of subscribing: `POST /subscribe` (the page's form, or JSON),
//! `GET /subscribe/confirm?token=` (the double opt-in's link), and
//! `GET|POST /unsubscribe?token=` (every mail's one-click link, and RFC 8058's POST).
//! A form is answered with a page, JSON with JSON; the rules are `status::subscribe`'s.

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::{St, error, ok};
use crate::status::html::{SubscribePage, subscribe_page};
use crate::status::subscribe::{self, Ask, By, Done, Refusal};

/// Whether the client speaks JSON (its body, or what it accepts).
fn wants_json(headers: &HeaderMap) -> bool {
    let has = |h: header::HeaderName| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/json"))
    };
    has(header::CONTENT_TYPE) || has(header::ACCEPT)
}

fn page_of(st: &super::Shared) -> Option<std::sync::Arc<crate::status::model::Page>> {
    st.snap.borrow().page.clone()
}

/// An HTML answer that no cache keeps.
fn html(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn refusal_status(r: &Refusal) -> StatusCode {
    match r {
        Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
        Refusal::NotFound(_) => StatusCode::NOT_FOUND,
        Refusal::Conflict(_) => StatusCode::CONFLICT,
        Refusal::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// A refusal as said to the client (a store's failure is logged, never said).
fn refusal_text(r: &Refusal) -> String {
    match r {
        Refusal::Store(e) => {
            tracing::error!("status page: subscribe: {e}");
            "the store is unavailable; try again".into()
        }
        r => r.to_string(),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AskJson {
    email: Option<String>,
    webhook: Option<String>,
    #[serde(default)]
    components: Vec<String>,
}

/// The ask of a JSON body or a form (`email`, `webhook`, `components` repeated); blank
/// fields are absent.
fn parse_ask(headers: &HeaderMap, body: &Bytes) -> Result<Ask, String> {
    let blank = |s: Option<String>| s.filter(|v| !v.trim().is_empty());
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if is_json {
        let a: AskJson =
            serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
        return Ok(Ask {
            email: blank(a.email),
            webhook: blank(a.webhook),
            components: a.components,
        });
    }
    let mut ask = Ask::default();
    for (k, v) in form_urlencoded::parse(body) {
        match k.as_ref() {
            "email" => ask.email = blank(Some(v.into_owned())),
            "webhook" => ask.webhook = blank(Some(v.into_owned())),
            "components" | "component" => ask.components.push(v.into_owned()),
            other => return Err(format!("unknown field `{other}`")),
        }
    }
    Ok(ask)
}

/// `POST /subscribe`.
pub(super) async fn form(State(st): St, headers: HeaderMap, body: Bytes) -> Response {
    let json_reply = wants_json(&headers);
    let Some(page) = page_of(&st) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the page is still loading; try again",
        );
    };
    let said = |status: StatusCode, message: String| {
        if json_reply {
            error(status, message)
        } else {
            html(
                status,
                subscribe_page(
                    &page,
                    &SubscribePage {
                        message: Some(message),
                        error: true,
                        form: true,
                        ..Default::default()
                    },
                ),
            )
        }
    };
    let ask = match parse_ask(&headers, &body) {
        Ok(a) => a,
        Err(e) => return said(StatusCode::BAD_REQUEST, e),
    };
    let Some(store) = st.store.as_ref() else {
        return said(
            StatusCode::SERVICE_UNAVAILABLE,
            "no store to write to".into(),
        );
    };
    let known: Vec<String> = page.components.iter().map(|c| c.name.clone()).collect();
    match subscribe::subscribe(store, &page.info, &known, ask, By::Public, st.allow_private).await {
        Ok(Done::Confirming(s)) => {
            let message = format!(
                "Almost there: we sent a mail to {} with a link to confirm. Nothing is sent until it is opened.",
                s.address
            );
            if json_reply {
                ok(
                    StatusCode::ACCEPTED,
                    json!({"subscriber": crate::status::subscribe::public_json(&s, false), "message": message}),
                )
            } else {
                html(
                    StatusCode::ACCEPTED,
                    subscribe_page(
                        &page,
                        &SubscribePage {
                            heading: Some("Check your mail".into()),
                            message: Some(message),
                            ..Default::default()
                        },
                    ),
                )
            }
        }
        Ok(Done::Active(s)) => {
            let message = format!("Subscribed: {} gets every update.", s.address);
            if json_reply {
                ok(
                    StatusCode::CREATED,
                    json!({"subscriber": crate::status::subscribe::public_json(&s, true), "message": message}),
                )
            } else {
                html(
                    StatusCode::CREATED,
                    subscribe_page(
                        &page,
                        &SubscribePage {
                            heading: Some("Subscribed".into()),
                            message: Some(message),
                            secret: Some(s.secret.clone()).filter(|x| !x.is_empty()),
                            ..Default::default()
                        },
                    ),
                )
            }
        }
        Err(r) => said(refusal_status(&r), refusal_text(&r)),
    }
}

#[derive(Deserialize)]
pub(super) struct Token {
    token: Option<String>,
}

/// A confirmation or unsubscribe link, answered as a page (or JSON).
async fn link(
    st: &super::Shared,
    headers: &HeaderMap,
    token: Option<String>,
    confirm: bool,
) -> Response {
    let json_reply = wants_json(headers);
    let Some(page) = page_of(st) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the page is still loading; try again",
        );
    };
    let Some(store) = st.store.as_ref() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no store to write to");
    };
    let token = token.unwrap_or_default();
    let done = if confirm {
        subscribe::confirm(store, &token).await
    } else {
        subscribe::unsubscribe(store, &token).await
    };
    let (status, heading, message, is_error) = match &done {
        Ok(s) if confirm => (
            StatusCode::OK,
            "Subscribed",
            format!(
                "Confirmed: {} gets every update of {}.",
                s.address, page.info.name
            ),
            false,
        ),
        Ok(s) => (
            StatusCode::OK,
            "Unsubscribed",
            format!("{} gets no more updates of {}.", s.address, page.info.name),
            false,
        ),
        Err(r) => (
            refusal_status(r),
            if confirm {
                "Not confirmed"
            } else {
                "Not unsubscribed"
            },
            refusal_text(r),
            true,
        ),
    };
    if json_reply {
        return match done {
            Ok(s) => ok(
                status,
                json!({"subscriber": crate::status::subscribe::public_json(&s, false), "message": message}),
            ),
            Err(_) => error(status, message),
        };
    }
    html(
        status,
        subscribe_page(
            &page,
            &SubscribePage {
                heading: Some(heading.into()),
                message: Some(message),
                error: is_error,
                ..Default::default()
            },
        ),
    )
}

/// `GET /subscribe/confirm?token=`.
pub(super) async fn confirm(State(st): St, headers: HeaderMap, q: Query<Token>) -> Response {
    link(&st, &headers, q.0.token, true).await
}

/// `GET|POST /unsubscribe?token=`: one click (the mail's link, or the mail client's
/// RFC 8058 POST) and the subscriber is gone.
pub(super) async fn unsubscribe(State(st): St, headers: HeaderMap, q: Query<Token>) -> Response {
    link(&st, &headers, q.0.token, false).await
}
