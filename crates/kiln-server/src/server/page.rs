//! The run page (`GET /ui/runs/{id}`): a browser view of one run's record and live log.
//!
//! The HTML is static and public; it carries no run data. Its script asks for the API token and
//! reads the run through the same authenticated API as the CLI (record, then the followed log
//! by byte offset, reconnecting where it left off), so the page adds no second way in.

use axum::extract::Path;
use axum::http::header;
use axum::response::{Html, IntoResponse};

use super::headers;

const PAGE: &str = include_str!("run_page.html");

/// The page for run `id`.
#[utoipa::path(get, path = "/ui/runs/{id}", tag = "runs", security(()),
    params(("id" = String, Path, description = "Run ID")),
    responses((status = 200, description = "The run page (HTML; it reads the API with the user's token)", body = String, content_type = "text/html")))]
pub async fn run_page(Path(id): Path<String>) -> impl IntoResponse {
    let page = render(&id);
    ([(header::CONTENT_SECURITY_POLICY, headers::page_policy(&page))], Html(page))
}

/// The page with `id` as a JavaScript string literal. JSON is one, once `<` cannot close the
/// script element.
fn render(id: &str) -> String {
    let literal = serde_json::Value::String(id.to_string()).to_string().replace('<', "\\u003c");
    PAGE.replace("__RUN_ID__", &literal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_id_cannot_escape_the_script() {
        let page = render("ka1</script><script>alert(1)//\"");
        assert!(
            page.contains(r#"const runId = "ka1\u003c/script>\u003cscript>alert(1)//\"";"#),
            "{page}"
        );
        assert_eq!(page.matches("</script>").count(), 1);
    }
}
