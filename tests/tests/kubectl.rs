//! The real kubectl through relay → agent → kube-sim (the suite itself is in
//! `kubechat_tests::kubectl_suite`; the control-plane tests run it too).

use kubechat_tests::kubectl_suite as suite;
use kubechat_tests::stack::KubeStack;

const USER: &str = "kubechat:user:alice@example.com";
const USER_GROUPS: &[&str] = &["kubechat:tenant:acme", "kubechat:role:tenant_user"];
const VIEWER: &str = "kubechat:user:victor@example.com";
const VIEWER_GROUPS: &[&str] = &["kubechat:tenant:acme", "kubechat:role:tenant_viewer"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_get_pods_across_namespaces() {
    let s = KubeStack::start().await;
    suite::version_and_get_pods_across_namespaces(&s.kubectl(USER, USER_GROUPS)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_sees_a_pod_created_meanwhile() {
    let s = KubeStack::start().await;
    suite::get_watch_sees_a_pod_created_meanwhile(&s.kubectl(USER, USER_GROUPS)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_pod_shows_its_events() {
    let s = KubeStack::start().await;
    suite::describe_pod_shows_its_events(&s.kubectl(USER, USER_GROUPS)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_streams_lines_as_they_are_written() {
    let s = KubeStack::start().await;
    suite::logs_follow_streams_lines_as_they_are_written(&s.kubectl(USER, USER_GROUPS)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_patch_server_side_apply_and_delete() {
    let s = KubeStack::start().await;
    suite::apply_patch_server_side_apply_and_delete(&s.kubectl(USER, USER_GROUPS)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_can_i_answers_for_the_impersonated_user() {
    let s = KubeStack::start().await;
    suite::auth_can_i_for_a_user(&s.kubectl(USER, USER_GROUPS)).await;
    let viewer = s.kubectl(VIEWER, VIEWER_GROUPS);
    assert_eq!(viewer.ok(&["auth", "can-i", "list", "pods", "-n", "web"]).await.trim(), "yes");
    assert_eq!(viewer.run(&["auth", "can-i", "delete", "pods", "-n", "web"]).await.stdout.trim(), "no");
    assert_eq!(viewer.run(&["auth", "can-i", "get", "secrets", "-n", "web"]).await.stdout.trim(), "no");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_and_not_found_print_like_a_real_cluster() {
    let s = KubeStack::start().await;
    let viewer = s.kubectl(VIEWER, VIEWER_GROUPS);
    let pods = viewer.ok(&["get", "pods", "-n", "web", "-o", "name"]).await;
    let pod = pods.lines().next().expect("a pod").trim_start_matches("pod/").to_string();
    let err = viewer.fails(&["delete", "pod", &pod, "-n", "web"]).await;
    let want = format!(
        "Error from server (Forbidden): pods \"{pod}\" is forbidden: User \"{VIEWER}\" cannot delete resource \"pods\" in API group \"\" in the namespace \"web\""
    );
    assert!(err.contains(&want), "{err}");
    let err = viewer.fails(&["get", "pod", "no-such-pod", "-n", "web"]).await;
    assert!(err.contains("Error from server (NotFound): pods \"no-such-pod\" not found"), "{err}");
    // The pod is still there.
    viewer.ok(&["get", "pod", &pod, "-n", "web"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_commands_and_cat_echoes_stdin() {
    let s = KubeStack::start().await;
    suite::exec_runs_commands_and_cat_echoes_stdin(&s.kubectl(USER, USER_GROUPS)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_it_shell_under_a_pseudo_terminal() {
    let s = KubeStack::start().await;
    suite::exec_it_shell_under_a_pseudo_terminal(&s.kubectl(USER, USER_GROUPS)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_reaches_the_pods_service() {
    let s = KubeStack::start().await;
    suite::port_forward_reaches_the_pods_service(&s.kubectl(USER, USER_GROUPS)).await;
}
