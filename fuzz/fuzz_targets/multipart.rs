//! Multipart forms as the upload route reads them (axum's `Multipart` is this parser): any
//! body, cut into chunks of any size, yields fields or an error, never a panic, and a field
//! read with the route's cap for non-file fields never holds more than that.
#![no_main]

use futures_util::stream;
use libfuzzer_sys::fuzz_target;

const MAX_FIELD: usize = 64 << 10;
const MAX_PARTS: usize = 1000;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else { return };
    let chunk = usize::from(cut).max(1);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body.chunks(chunk).map(|c| Ok(c.to_vec())).collect();
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(async {
        let mut form = multer::Multipart::new(stream::iter(chunks), "XyZ");
        let mut parts = 0;
        while let Ok(Some(mut field)) = form.next_field().await {
            parts += 1;
            if parts > MAX_PARTS {
                return;
            }
            let _ = (field.name(), field.file_name(), field.content_type());
            let mut held = 0usize;
            while let Ok(Some(bytes)) = field.chunk().await {
                held += bytes.len();
                if held > MAX_FIELD {
                    break;
                }
            }
        }
    });
});
