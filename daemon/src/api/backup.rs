//! `GET /v1/backup`: a consistent copy of the whole store while the daemon runs (system admins
//! only: it holds every project's Secrets). `dray backup FILE` saves it; `dray restore FILE`
//! puts it back in a stopped daemon's data dir.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::io::AsyncReadExt;

use super::{ApiError, AppState};

pub(super) async fn backup(State(state): State<AppState>) -> Result<Response, ApiError> {
    // Written next to the data file (same disk, same privacy), streamed, and gone once sent:
    // the file is unlinked as soon as it is open.
    let path = state
        .engine
        .data_dir()
        .join(format!("backup-{}.redb", ulid::Ulid::new()));
    let (store, at) = (state.store.clone(), path.clone());
    let written = tokio::task::spawn_blocking(move || store.backup(&at))
        .await
        .map_err(|e| ApiError::Internal(format!("backup task failed: {e}")))?;
    if let Err(e) = written {
        let _ = std::fs::remove_file(&path);
        return Err(e.into());
    }
    let file = tokio::fs::File::open(&path).await;
    let _ = std::fs::remove_file(&path);
    let file = file.map_err(|e| ApiError::Internal(format!("cannot read the backup: {e}")))?;
    let length = file.metadata().await.map(|m| m.len()).unwrap_or_default();
    tracing::info!(bytes = length, "backup taken");
    let chunks = futures_util::stream::unfold(file, |mut file| async move {
        let mut chunk = vec![0u8; 64 * 1024];
        match file.read(&mut chunk).await {
            Ok(0) => None,
            Ok(n) => {
                chunk.truncate(n);
                Some((Ok::<_, std::io::Error>(chunk), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}
