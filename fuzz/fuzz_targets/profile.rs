//! Fuzzes board profiles (TOML from a user's file) through validation and the layout planner: any text
//! gives a profile and a plan, or an error — never a panic or an arithmetic overflow.
#![no_main]

use boardsmith::plan::{PlanInput, plan};
use boardsmith::profile::Catalog;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(profile) = Catalog::default().load_text("fuzz.toml", text) else {
        return;
    };
    for fill_content in [None, Some(0), Some(1 << 30)] {
        let input = PlanInput {
            image_size: None,
            fill_content,
            blob_size: Some(32 * 1024),
            epoch: 1_700_000_000,
        };
        if let Ok(layout) = plan(&profile, &input) {
            // Regions are ordered, disjoint and inside the image.
            let mut next = 0;
            for r in &layout.regions {
                assert!(r.start >= next && r.start <= r.end && r.end <= layout.image_size);
                next = r.end;
            }
        }
    }
});
