//! `POST /uploads`: a context archive streamed to disk while it is hashed and counted, checked to
//! be a complete `.tar.gz` (decoded to the end, so a truncated upload is refused now rather than
//! failing a run later, and its unpacked size counted against `--max-context-mb`), then renamed
//! into place under its ID. Nothing half-written is ever
//! visible under an upload's final name.

use std::io;
use std::path::{Path, PathBuf};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use futures_util::TryStreamExt as _;
use kiln_api::{ErrorBody, Upload};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt as _;

use super::error::ApiError;
use super::limits;
use super::state::AppState;
use kiln_api::uploads::{self, ContextLimit, ContextTooLarge};

/// Store a context archive (`.tar.gz`).
#[utoipa::path(post, path = "/uploads", tag = "uploads",
    request_body(description = "A .tar.gz", content(
        (ArchiveBytes = "application/gzip"), (ArchiveBytes = "application/octet-stream"))),
    responses(
        (status = 201, description = "Stored", body = Upload),
        (status = 400, description = "Not a complete .tar.gz", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 413, description = "Larger than --max-upload-mb, or unpacks to more than --max-context-mb", body = ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Upload>), ApiError> {
    let settings = &state.settings;
    limits::check_upload(&headers, settings.max_upload_bytes)?;
    let upload =
        store_upload(&settings.data_dir, settings.max_upload_bytes, settings.max_context, body)
            .await?;
    Ok((StatusCode::CREATED, Json(upload)))
}

/// The upload's body as the API document describes it: bytes (`format: binary`), which the
/// server reads whatever the content type says.
pub struct ArchiveBytes;

impl utoipa::PartialSchema for ArchiveBytes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Binary,
            )))
            .into()
    }
}

impl utoipa::ToSchema for ArchiveBytes {}

/// Removes the temporary file unless disarmed (every early return, including a dropped request).
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Streams `body` into the uploads directory and returns the stored upload.
pub async fn store_upload(
    data_dir: &Path,
    max_bytes: u64,
    max_context: ContextLimit,
    body: Body,
) -> Result<Upload, ApiError> {
    let dir = uploads::dir(data_dir);
    tokio::fs::create_dir_all(&dir).await.map_err(ApiError::internal)?;
    let id = uploads::new_id();
    let final_path = uploads::path(data_dir, &id)
        .ok_or_else(|| ApiError::internal("a new upload ID is not an upload ID"))?;
    let tmp_path = dir.join(format!("{id}.tmp"));
    let mut guard = TempFile(Some(tmp_path.clone()));
    let mut file = tokio::fs::File::create(&tmp_path).await.map_err(ApiError::internal)?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|e| ApiError::BadRequest(format!("reading the upload failed: {e}")))?
    {
        size += chunk.len() as u64;
        if size > max_bytes {
            return Err(limits::upload_too_large(max_bytes));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(ApiError::internal)?;
    }
    file.flush().await.map_err(ApiError::internal)?;
    file.sync_all().await.map_err(ApiError::internal)?;
    drop(file);
    let check_path = tmp_path.clone();
    tokio::task::spawn_blocking(move || check_tar_gz(&check_path, max_context))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e {
            CheckError::Incomplete(_) => ApiError::BadRequest(e.to_string()),
            CheckError::TooLarge(_) => limits::context_too_large(max_context),
        })?;
    tokio::fs::rename(&tmp_path, &final_path).await.map_err(ApiError::internal)?;
    guard.0 = None;
    let sha256 = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Upload { id, size, sha256 })
}

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("the upload is not a complete .tar.gz: {0}")]
    Incomplete(#[from] io::Error),
    #[error(transparent)]
    TooLarge(#[from] ContextTooLarge),
}

/// Decodes the whole archive: every entry's data and the gzip trailer (its CRC and length),
/// counting the unpacked bytes against `limit` and stopping as soon as they exceed it (a small
/// archive of zeros is not decompressed to the end).
pub fn check_tar_gz(path: &Path, limit: ContextLimit) -> Result<(), CheckError> {
    let file = std::fs::File::open(path)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(file)));
    let mut total: u64 = 0;
    for entry in archive.entries()? {
        let entry = entry?;
        let room = limit.bytes - total;
        total += io::copy(&mut io::Read::take(entry, room.saturating_add(1)), &mut io::sink())?;
        limit.check(total)?;
    }
    // The tar end marker may come before the end of the gzip stream: read it out, so the
    // decoder checks the trailer.
    io::copy(&mut archive.into_inner(), &mut io::sink())?;
    Ok(())
}
