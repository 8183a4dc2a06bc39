//! The workspace file API: upload (raw or multipart), download (ranges, ETags), list, delete,
//! move, and a `.tar.gz` of a directory.
//!
//! Paths are validated and resolved by `sandbox-workspace`, never through a link. Bodies
//! stream both ways through bounded channels to a blocking thread, so neither a 1 GiB upload
//! nor a download is ever held in memory, and an upload becomes visible (atomically, by a
//! rename) only once it is complete.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sandbox_api::{FileInfo, FileList, MoveFile, UploadedFile, UploadedFiles};
use sandbox_service::access::auth::Caller;
use sandbox_service::files::READ_CHUNK;
use sandbox_service::{Service, ServiceError};
use sandbox_workspace::{Entry, RelPath, WorkspaceError};

use crate::query::{flag, params};
use sandbox_http::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

/// Chunks in flight between the thread that writes an archive and the response body.
const CHANNEL_CHUNKS: usize = 8;

/// How much of a refused upload's body is still read (and dropped) before the answer, so that
/// a client that sends its whole body before it reads gets the answer instead of a reset.
const LINGER_BYTES: usize = 64 << 20;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(10);

async fn linger<E>(body: &mut (impl Stream<Item = std::result::Result<Bytes, E>> + Unpin)) {
    Linger::new().drain(body).await;
}

/// What lingering may still read and for how long: one budget for a whole request, whether
/// its body is read as one stream or as a form's fields.
struct Linger {
    deadline: tokio::time::Instant,
    left: usize,
}

impl Linger {
    fn new() -> Linger {
        Linger { deadline: tokio::time::Instant::now() + LINGER_TIME, left: LINGER_BYTES }
    }

    /// Drops what `body` still sends; true if it ended within the bounds.
    async fn drain<E>(&mut self, body: &mut (impl Stream<Item = std::result::Result<Bytes, E>> + Unpin)) -> bool {
        while self.left > 0 {
            match tokio::time::timeout_at(self.deadline, body.next()).await {
                Ok(Some(Ok(bytes))) => self.left = self.left.saturating_sub(bytes.len()),
                Ok(None) => return true,
                _ => return false,
            }
        }
        false
    }
}

/// Streams `body` into `path` of session `id`'s workspace. Refused, it reads (and drops) some
/// of the rest of the body first, so a client that sends before it reads gets the answer.
async fn receive<E: std::fmt::Display>(
    state: &Arc<Service>,
    caller: &Caller,
    id: &str,
    path: RelPath,
    declared: Option<u64>,
    mut body: impl Stream<Item = std::result::Result<Bytes, E>> + Unpin,
) -> Result<UploadedFile> {
    let uploaded = match state.files(caller, id).await {
        Ok(files) => files.upload(path, declared, &mut body).await,
        Err(e) => Err(e),
    };
    if uploaded.is_err() {
        linger(&mut body).await;
    }
    Ok(uploaded?)
}

/// An upload refused before its body was read to the end: the connection cannot carry another
/// request (the rest of the body would be read as one), so the client is told to close it.
fn refused(e: ApiError) -> Response {
    let mut resp = e.into_response();
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

#[utoipa::path(put, path = "/v1/sessions/{id}/files/{path}", request_body(content = Vec<u8>, content_type = "application/octet-stream"), responses(
    (status = 201, body = UploadedFile), (status = 400, body = sandbox_api::ErrorBody, description = "An unsafe path"),
    (status = 404, body = sandbox_api::ErrorBody), (status = 409, body = sandbox_api::ErrorBody, description = "A directory or a link is in the way"),
    (status = 413, body = sandbox_api::ErrorBody), (status = 507, body = sandbox_api::ErrorBody, description = "The workspace quota"),
))]
/// `PUT /v1/sessions/{id}/files/{path}`: the body is the file.
pub async fn upload(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    Path((id, path)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let received = async {
        let path = RelPath::parse(&path)?;
        let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        receive(&state, &caller, &id, path, declared, body.into_data_stream()).await
    };
    match received.await {
        Ok(file) => {
            tracing::info!(session = %id, path = %file.path, size = file.size, "file uploaded");
            (StatusCode::CREATED, Json(file)).into_response()
        }
        Err(e) => refused(e),
    }
}

#[utoipa::path(post, path = "/v1/sessions/{id}/files", request_body(content = Vec<u8>, content_type = "multipart/form-data"), responses(
    (status = 201, body = UploadedFiles), (status = 400, body = sandbox_api::ErrorBody), (status = 413, body = sandbox_api::ErrorBody),
    (status = 422, body = sandbox_api::ErrorBody), (status = 507, body = sandbox_api::ErrorBody),
))]
/// `POST /v1/sessions/{id}/files` as `multipart/form-data`: each part with a file name is a
/// file, written under `?path=DIR` (or a preceding `path` field); its name may contain `/`.
pub async fn upload_multipart(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    multipart: std::result::Result<Multipart, MultipartRejection>,
) -> Response {
    match receive_form(&state, &caller, &id, query, multipart).await {
        Ok(files) => {
            tracing::info!(session = %id, files = files.files.len(), "files uploaded");
            (StatusCode::CREATED, Json(files)).into_response()
        }
        Err(e) => refused(e),
    }
}

async fn receive_form(
    state: &Arc<Service>,
    caller: &Caller,
    id: &str,
    query: Option<String>,
    multipart: std::result::Result<Multipart, MultipartRejection>,
) -> Result<UploadedFiles> {
    let mut multipart =
        multipart.map_err(|e| ApiError::BadRequest(format!("expected multipart/form-data with files: {e}")))?;
    let received = receive_parts(state, caller, id, query, &mut multipart).await;
    if received.is_err() {
        // Like a refused upload: read (and drop) some of the rest first, so a client that
        // sends its whole form before it reads gets the answer, not a reset.
        linger_form(&mut multipart).await;
    }
    received
}

async fn receive_parts(
    state: &Arc<Service>,
    caller: &Caller,
    id: &str,
    query: Option<String>,
    multipart: &mut Multipart,
) -> Result<UploadedFiles> {
    let mut dir = RelPath::parse_or_root(params(query).get("path").map_or("", String::as_str))?;
    let mut files = Vec::new();
    let bad =
        |e: axum::extract::multipart::MultipartError| ApiError::BadRequest(format!("malformed multipart body: {e}"));
    let mut parts = 0usize;
    let mut path_given = false;
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        parts += 1;
        if parts > MAX_FORM_PARTS {
            return Err(ApiError::PayloadTooLarge(format!("a form may have at most {MAX_FORM_PARTS} parts")));
        }
        let Some(name) = field.file_name().map(str::to_string) else {
            // Read whatever the field is, but never more than a small one.
            let value = small_field(field).await?;
            if value.0.as_deref() == Some("path") {
                if path_given {
                    return Err(ApiError::BadRequest("the form gives the path field twice".into()));
                }
                path_given = true;
                dir = RelPath::parse_or_root(&value.1)?;
            }
            continue;
        };
        let path = dir.join(RelPath::parse(&name)?.as_str());
        files.push(receive(state, caller, id, path, None, field).await?);
    }
    if files.is_empty() {
        return Err(ApiError::Invalid("the form has no file parts (parts with a filename)".into()));
    }
    Ok(UploadedFiles { files })
}

/// [`linger`] for a form: drops what is left of it, field by field, within the same bounds.
async fn linger_form(multipart: &mut Multipart) {
    let mut linger = Linger::new();
    while let Ok(Ok(Some(mut field))) = tokio::time::timeout_at(linger.deadline, multipart.next_field()).await {
        if !linger.drain(&mut field).await {
            return;
        }
    }
}

/// Parts in one form: files and fields together.
pub const MAX_FORM_PARTS: usize = 1000;
/// Bytes of a form field that is not a file (a `path`); read whole, so it must be small.
pub const MAX_FORM_FIELD_BYTES: usize = 64 << 10;

/// A non-file field's name and text, read chunk by chunk and refused past
/// [`MAX_FORM_FIELD_BYTES`] (reading it whole let one field grow the server by its size).
async fn small_field(mut field: axum::extract::multipart::Field<'_>) -> Result<(Option<String>, String)> {
    let name = field.name().map(str::to_string);
    let mut bytes = Vec::new();
    while let Some(chunk) =
        field.chunk().await.map_err(|e| ApiError::BadRequest(format!("malformed multipart body: {e}")))?
    {
        if bytes.len() + chunk.len() > MAX_FORM_FIELD_BYTES {
            return Err(ApiError::PayloadTooLarge(format!(
                "form field {:?} is over {} KiB (only file parts may be large)",
                name.as_deref().unwrap_or(""),
                MAX_FORM_FIELD_BYTES >> 10
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| ApiError::BadRequest(format!("form field {:?} is not UTF-8", name.as_deref().unwrap_or(""))))?;
    Ok((name, text))
}

fn etag(e: &Entry) -> String {
    let ns = e.modified_at.timestamp_nanos_opt().unwrap_or_default();
    format!("\"{:x}-{:x}\"", e.size, ns)
}

/// A single `bytes=` range of a file of `size` bytes, as (first, last) inclusive. `Ok(None)`:
/// serve the whole file (no range, or several, which we answer whole as RFC 9110 allows).
fn range(value: &str, size: u64) -> std::result::Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (first, last) = match (a.parse::<u64>().ok(), b.parse::<u64>().ok()) {
        (Some(first), Some(last)) if first <= last => (first, last.min(size.saturating_sub(1))),
        (Some(first), None) if b.is_empty() => (first, size.saturating_sub(1)),
        (None, Some(n)) if a.is_empty() && n > 0 => (size.saturating_sub(n), size.saturating_sub(1)),
        _ => return Err(()),
    };
    if first >= size {
        return Err(());
    }
    Ok(Some((first, last)))
}

#[utoipa::path(get, path = "/v1/sessions/{id}/files/{path}", responses(
    (status = 200, description = "The file (Content-Type guessed from its name; ETag, Last-Modified)"),
    (status = 206, description = "The requested range"), (status = 304, description = "If-None-Match matched"),
    (status = 400, body = sandbox_api::ErrorBody), (status = 404, body = sandbox_api::ErrorBody), (status = 409, body = sandbox_api::ErrorBody), (status = 416, body = sandbox_api::ErrorBody),
))]
/// `GET /v1/sessions/{id}/files/{path}`: the file, streamed, with `ETag`, `Last-Modified` and
/// single-range support.
pub async fn download(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    Path((id, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    let rel = RelPath::parse(&path)?;
    let (opened, entry) = state.files(&caller, &id).await?.open(rel).await?;
    let tag = etag(&entry);
    let header_str = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    if header_str(header::IF_NONE_MATCH).is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*")) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
    }
    let size = entry.size;
    let wanted = match header_str(header::RANGE) {
        // If-Range with another validator: the file changed, send it whole.
        Some(_) if header_str(header::IF_RANGE).is_some_and(|v| v.trim() != tag) => None,
        Some(r) => match range(r, size) {
            Ok(r) => r,
            Err(()) => {
                let err = ApiError::RangeNotSatisfiable(format!("range {r:?} is outside the file's {size} bytes"));
                let mut resp = err.into_response();
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return Ok(resp);
            }
        },
        None => None,
    };
    let (status, first, len) = match wanted {
        Some((first, last)) => (StatusCode::PARTIAL_CONTENT, first, last - first + 1),
        None => (StatusCode::OK, 0, size),
    };
    let body = Body::from_stream(opened.into_stream(first, len, READ_CHUNK));
    let mime = mime_guess::from_path(entry.path.as_path()).first_or_octet_stream();
    let modified = entry.modified_at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, mime.as_ref())
        .header(header::CONTENT_LENGTH, len)
        .header(header::ETAG, &tag)
        .header(header::LAST_MODIFIED, modified)
        .header(header::ACCEPT_RANGES, "bytes");
    if status == StatusCode::PARTIAL_CONTENT {
        resp = resp.header(header::CONTENT_RANGE, format!("bytes {first}-{}/{size}", first + len - 1));
    }
    resp.body(body).map_err(|e| ApiError::Internal(format!("response: {e}")))
}

#[utoipa::path(get, path = "/v1/sessions/{id}/files", params(("path" = Option<String>, Query), ("recursive" = Option<bool>, Query)), responses(
    (status = 200, body = FileList), (status = 400, body = sandbox_api::ErrorBody), (status = 404, body = sandbox_api::ErrorBody),
))]
/// `GET /v1/sessions/{id}/files?path=DIR&recursive=true`.
pub async fn list(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<FileList>> {
    let params = params(query);
    let dir = RelPath::parse_or_root(params.get("path").map_or("", String::as_str))?;
    let recursive = flag(&params, "recursive")?;
    let (files, truncated) = state.files(&caller, &id).await?.list(dir, recursive).await?;
    Ok(Json(FileList { files, truncated }))
}

#[utoipa::path(delete, path = "/v1/sessions/{id}/files/{path}", params(("recursive" = Option<bool>, Query)), responses(
    (status = 204), (status = 404, body = sandbox_api::ErrorBody), (status = 409, body = sandbox_api::ErrorBody, description = "A directory that is not empty"),
))]
/// `DELETE /v1/sessions/{id}/files/{path}[?recursive=true]`.
pub async fn delete(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    Path((id, path)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<StatusCode> {
    let rel = RelPath::parse(&path)?;
    let recursive = flag(&params(query), "recursive")?;
    state.files(&caller, &id).await?.remove(rel, recursive).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/sessions/{id}/files/{path}:move", request_body = MoveFile, responses(
    (status = 200, body = FileInfo), (status = 404, body = sandbox_api::ErrorBody), (status = 409, body = sandbox_api::ErrorBody, description = "The target exists"),
))]
/// `POST /v1/sessions/{id}/files/{path}:move` `{"to": "new/path"}`.
pub async fn move_file(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    Path((id, path)): Path<(String, String)>,
    crate::extract::ApiBytes(body): crate::extract::ApiBytes,
) -> Result<Response> {
    // The route is known before the body is read: a POST that is not a move is 405 whatever it sends.
    let Some(from) = path.strip_suffix(":move") else {
        let refused = ApiError::MethodNotAllowed("POST on a file is only `{path}:move`; upload with PUT".into());
        return Ok(([(header::ALLOW, "GET, HEAD, PUT, DELETE")], refused).into_response());
    };
    let req: MoveFile = crate::extract::parse(&body)?;
    let (from, to) = (RelPath::parse(from)?, RelPath::parse(&req.to)?);
    Ok(Json(state.files(&caller, &id).await?.rename(from, to).await?).into_response())
}

/// Hands what the archive writer produces to the response body, in chunks.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= READ_CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| std::io::Error::other("the client went away"))
    }
}

#[utoipa::path(get, path = "/v1/sessions/{id}/archive", params(("path" = Option<String>, Query)), responses(
    (status = 200, content_type = "application/gzip", description = "The directory as a .tar.gz, streamed"),
    (status = 404, body = sandbox_api::ErrorBody), (status = 409, body = sandbox_api::ErrorBody),
))]
/// `GET /v1/sessions/{id}/archive?path=DIR`: the directory as a `.tar.gz`, streamed.
pub async fn archive(
    State(state): State<Arc<Service>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let dir = RelPath::parse_or_root(params(query).get("path").map_or("", String::as_str))?;
    let files = state.files(&caller, &id).await?;
    // Checked before the answer starts: a file, or nothing, is an error status, not a broken body.
    if files.stat(dir.clone()).await?.kind != sandbox_workspace::Kind::Dir {
        return Err(ServiceError::from(WorkspaceError::NotDir(dir.to_string())).into());
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(CHANNEL_CHUNKS);
    let archive_dir = dir.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter { tx: tx.clone(), buf: Vec::new() };
        let written = files.archive(&archive_dir, &mut out);
        let finished = written.map_err(|e| std::io::Error::other(e.to_string())).and_then(|()| {
            use std::io::Write;
            out.flush()
        });
        if let Err(e) = finished {
            // The body ends with an error: the client sees a broken transfer, not a short file.
            let _ = tx.blocking_send(Err(e));
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let name = match dir.split_last() {
        Some((_, last)) => last.to_string_lossy().into_owned(),
        None => "workspace".to_string(),
    };
    let disposition = format!("attachment; filename*=UTF-8''{}.tar.gz", sandbox_api::percent_encode(&name));
    Ok((
        [(header::CONTENT_TYPE, "application/gzip".to_string()), (header::CONTENT_DISPOSITION, disposition)],
        Body::from_stream(stream),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(range("bytes=95-200", 100), Ok(Some((95, 99))));
        assert_eq!(range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(range("items=0-1", 100), Ok(None));
        assert_eq!(range("bytes=100-", 100), Err(()));
        assert_eq!(range("bytes=9-3", 100), Err(()));
        assert_eq!(range("bytes=abc", 100), Err(()));
        assert_eq!(range("bytes=0-0", 0), Err(()));
    }
}
