//! Dev mode (`--dev` only): the demo page and `/dev/token?user=NAME`, which mints a token for
//! any user with every capability on every room so two tabs can be two users. Tokens are signed
//! with the process's fresh dev-only key ([`crate::auth::mint_dev`]), never with a configured
//! secret, so they are worthless to any other edge and die with the process.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use plaza_backend::EdgeLink;
use serde::Deserialize;

use crate::auth::{Capability, TokenSpec, mint_dev};
use crate::node::Node;

/// The demo page: plain HTML and JS, no build step.
pub async fn page() -> Html<&'static str> {
    Html(include_str!("dev/index.html"))
}

#[derive(Deserialize)]
pub(crate) struct TokenQuery {
    user: Option<String>,
}

/// Mints a 24-hour token for `?user=NAME` (1–64 characters).
pub(crate) async fn token<L: EdgeLink>(
    State(node): State<Arc<Node<L>>>,
    Query(q): Query<TokenQuery>,
) -> Response {
    let Some(secret) = &node.dev_secret else {
        return (StatusCode::NOT_FOUND, "dev mode is off\n").into_response();
    };
    let user = q.user.unwrap_or_default();
    let user = user.trim();
    if user.is_empty() || user.chars().count() > 64 {
        return (
            StatusCode::BAD_REQUEST,
            "query parameter `user` must be 1-64 characters\n",
        )
            .into_response();
    }
    match mint_dev(
        secret,
        &node.config.auth.capability_claim,
        &dev_token_spec(user),
    ) {
        Ok(token) => Json(serde_json::json!({ "token": token })).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot mint token: {e}\n"),
        )
            .into_response(),
    }
}

/// Every capability on every room, valid for a day, with the name as presence info.
pub fn dev_token_spec(user: &str) -> TokenSpec {
    TokenSpec {
        user: user.to_owned(),
        rooms: vec![(
            "*".into(),
            vec![
                Capability::Subscribe,
                Capability::Publish,
                Capability::Presence,
            ],
        )],
        ttl: Some(Duration::from_secs(24 * 3600)),
        info: Some(serde_json::json!({ "name": user })),
    }
}
