//! The executor protocol, both directions: any bytes read as frames of requests (what the
//! executor reads) and of events (what sandboxd reads) either decode or fail, never panic or
//! allocate past the frame limit; whatever decodes encodes to a frame that decodes to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandbox_protocol::{encode, read_frame, Event, Request};

fn round_trip<T>(data: &[u8])
where
    T: serde::Serialize + for<'de> serde::Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    let mut input = data;
    for _ in 0..16 {
        match read_frame::<_, T>(&mut input) {
            Ok(Some(msg)) => {
                let frame = encode(&msg).expect("a decoded message encodes");
                let back: T = read_frame(&mut &frame[..]).expect("decodes").expect("one frame");
                assert_eq!(back, msg);
            }
            Ok(None) | Err(_) => return,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Request>(data);
    round_trip::<Event>(data);
});
