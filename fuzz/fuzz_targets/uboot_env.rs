//! Fuzzes the U-Boot environment readers: the default-environment scan of a U-Boot binary (`build`,
//! `[bootloader.env]`) and the environment-file decoder. Any bytes give an environment or none,
//! never a panic, and in time linear in the input (libFuzzer's timeout catches a quadratic scan);
//! what is found encodes to a file that decodes to the same environment.
#![no_main]

use boardsmith::image::ubootenv::Env;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Env::find_default(data) {
        assert!(env.get("bootcmd").is_some() && env.get("bootdelay").is_some());
        let size = env
            .0
            .iter()
            .map(|(n, v)| n.len() + v.len() + 2)
            .sum::<usize>()
            + 8;
        let file = env.encode(size).expect("sized to fit");
        assert_eq!(Env::decode(&file).as_ref(), Some(&env));
    }
    let _ = Env::decode(data);
});
