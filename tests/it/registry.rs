//! Every stage type usable in TOML is documented in `cutover stages`, and the reverse.

#[test]
fn registered_stage_names_are_the_expected_ones() {
    cutover_plugin_notify::link();
    cutover_stages::link();
    let documented: Vec<&str> = cutover_core::registered_stages().iter().map(|s| s.name).collect();
    let usable = cutover_core::typetag_names();
    assert_eq!(documented, usable, "typetag and register_stage! disagree");
    assert_eq!(
        documented,
        [
            "dedup",
            "filter",
            "health-check",
            "notify",
            "start-state-machine",
            "traffic-shift",
            "webhook-notify"
        ],
        "the stage types this binary offers"
    );
}
