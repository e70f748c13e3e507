//! The web UI: plain HTML, CSS and JavaScript modules (`daemon/ui/`, no build step and no
//! third-party code), compiled into the binary and served at `/` on the API's port. The page
//! signs in with an API token and calls the same `/v1` routes as the CLI.
//!
//! Every answer carries a Content Security Policy that lets the page load only these files and
//! talk only to this daemon (no inline script, no other origin, no framing), so text from a
//! Stage, a Freight or a log line that slipped past the UI's escaping still could not run.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The UI's files: name, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/api.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/dom.js"),
    ),
    (
        "pipeline.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/pipeline.js"),
    ),
    (
        "panels.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/panels.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/style.css"),
    ),
];

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn serve(name: &str) -> Response {
    let Some((_, content_type, body)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such file in the UI").into_response();
    };
    let mut response = (*body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The files change with the binary: always ask again (they are small).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /`: the page.
pub async fn index() -> Response {
    serve("index.html")
}

/// `GET /ui/{file}`: its scripts and style.
pub async fn file(Path(name): Path<String>) -> Response {
    serve(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_loads_is_served_and_nothing_else() {
        for (name, _, body) in FILES {
            assert!(!body.is_empty(), "{name}");
            // Every module a script imports is one of the files.
            for line in body.lines().filter(|l| l.starts_with("import ")) {
                let file = line
                    .rsplit("\"./")
                    .next()
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or_default();
                assert!(
                    FILES.iter().any(|(n, _, _)| *n == file),
                    "{name} imports {file}, which is not served"
                );
            }
        }
        let page = FILES[0].2;
        for (name, _, _) in &FILES[1..] {
            if *name == "app.js" || *name == "style.css" {
                assert!(
                    page.contains(&format!("/ui/{name}")),
                    "index.html loads {name}"
                );
            }
        }
        for bad in ["../Cargo.toml", "", "index.html/", "%2e%2e"] {
            assert_eq!(serve(bad).status(), StatusCode::NOT_FOUND, "{bad}");
        }
    }

    #[test]
    fn no_script_builds_markup_from_data() {
        // The one `innerHTML` is the graph's edges (numbers and fixed class names); anything
        // else must build elements with text (`dom.js`).
        for (name, _, body) in FILES {
            let uses = body.matches("innerHTML").count();
            let allowed = usize::from(*name == "pipeline.js");
            assert!(uses <= allowed, "{name} sets innerHTML {uses} times");
            assert!(
                !body.contains("outerHTML") && !body.contains("insertAdjacentHTML"),
                "{name}"
            );
            assert!(
                !body.contains("eval(") && !body.contains("new Function"),
                "{name}"
            );
        }
    }
}
