//! Request bodies, as sandboxd parses them (serde_json into the API's types): any bytes are
//! parsed or refused, never a panic or a stack overflow (nesting is limited), and what parses
//! serializes again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandbox_api::{CreateExecution, CreateSession, CreateTemplate, InstallPackages, InvokeRequest, MoveFile, RunRequest};

fn parse<T: serde::de::DeserializeOwned + serde::Serialize>(data: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<T>(data) {
        serde_json::to_vec(&value).expect("a parsed request serializes");
    }
}

fuzz_target!(|data: &[u8]| {
    parse::<CreateSession>(data);
    parse::<CreateExecution>(data);
    parse::<RunRequest>(data);
    parse::<CreateTemplate>(data);
    parse::<InstallPackages>(data);
    parse::<InvokeRequest>(data);
    parse::<MoveFile>(data);
});
