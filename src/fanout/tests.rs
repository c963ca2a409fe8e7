use super::Rule;

#[test]
fn each_client_sees_versions_strictly_increasing() {
    assert_eq!(Rule::Advance.admit(5, 4), Some(5));
    assert_eq!(Rule::Advance.admit(5, 5), None, "no duplicate update");
    assert_eq!(Rule::Advance.admit(4, 5), None, "never back");
    assert_eq!(
        Rule::Resync.admit(5, 5),
        Some(5),
        "a requested sync is sent again"
    );
    assert_eq!(Rule::Resync.admit(4, 5), None);
}
