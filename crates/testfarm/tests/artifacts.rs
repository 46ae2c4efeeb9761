//! The artifact repository end to end: a real server on a loopback port with a real
//! SQLite file and blob directory, driven through the API and the CLI. Uploads round
//! trip with their sha256, identical content is stored once, a corrupt upload leaves
//! nothing, ranges are exact, `--latest` finds the newest build, and retention deletes
//! old unpinned builds (and reports without deleting on a dry run) but never pinned ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../testfarm-artifacts/tests/s3_server.rs"]
mod s3_server;
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Http, Lab, Resp, cli, stderr, stdout, wait_for};

fn sha(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// Every blob file under the lab's artifact directory.
fn blob_files(lab: &Lab) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![lab.path().join("artifacts").join("sha256")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn new_build(http: &Http, token: &str, branch: &str, commit: &str) -> String {
    let r = http.post(
        "/api/v1/builds",
        token,
        json!({"commit": commit, "branch": branch, "arch": "arm64"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["id"].as_str().unwrap().to_string()
}

/// A build of `main` at `commit` holding one kernel, `Image`, of `data`.
fn kernel_build(http: &Http, token: &str, commit: &str, data: &[u8]) -> String {
    let b = new_build(http, token, "main", commit);
    let r = upload(http, token, &b, "Image", "kind=kernel", data);
    assert_eq!(r.status, 201, "{}", r.text);
    b
}

fn upload(http: &Http, token: &str, build: &str, name: &str, query: &str, data: &[u8]) -> Resp {
    http.call_with_headers(
        "PUT",
        &format!("/api/v1/builds/{build}/artifacts/{name}?{query}"),
        token,
        &[("content-type", "application/octet-stream")],
        data.to_vec(),
    )
}

/// A GET whose raw bytes and headers are kept (the support helper decodes text).
fn get_bytes(
    url: &str,
    token: &str,
    path: &str,
    range: Option<&str>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = reqwest::Client::new()
            .get(format!("{url}{path}"))
            .bearer_auth(token)
            .timeout(Duration::from_secs(20));
        if let Some(r) = range {
            req = req.header("range", r);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        (status, headers, resp.bytes().await.unwrap().to_vec())
    })
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn deadline(limit: Duration) -> impl Fn() {
    let start = Instant::now();
    move || {
        assert!(
            start.elapsed() < limit,
            "the test took longer than {limit:?}"
        )
    }
}

#[test]
fn upload_list_download_dedup_corruption_and_ranges() {
    let within = deadline(Duration::from_secs(90));
    let lab = Lab::new();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let dir = tempfile::tempdir().unwrap();
    // 3 MiB of varied bytes, uploaded by the CLI (streamed, checksummed).
    let data: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let file = dir.path().join("Image");
    std::fs::write(&file, &data).unwrap();
    let build = new_build(&http, t, "main", "abc123");
    let out = cli(
        &server.url,
        t,
        &[
            "artifacts",
            "upload",
            "--build",
            &build,
            "--kind",
            "kernel",
            file.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&sha(&data)), "{}", stdout(&out));

    // Listed with its checksum and build's metadata.
    let out = cli(
        &server.url,
        t,
        &["artifacts", "list", "--branch", "main", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["sha256"], sha(&data));
    assert_eq!(listed[0]["size"], data.len());
    assert_eq!(listed[0]["kind"], "kernel");
    assert_eq!(listed[0]["commit"], "abc123");

    // Downloaded by build and name, and by digest: the same bytes.
    let got = dir.path().join("got");
    let out = cli(
        &server.url,
        t,
        &[
            "artifacts",
            "get",
            "--build",
            &build,
            "--name",
            "Image",
            "-o",
            got.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&got).unwrap(), data);
    let (status, headers, body) = get_bytes(
        &server.url,
        t,
        &format!("/api/v1/artifacts/{}", sha(&data)),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(body, data);
    assert_eq!(
        header(&headers, "x-checksum-sha256"),
        Some(sha(&data).as_str())
    );
    assert!(
        header(&headers, "repr-digest")
            .is_some_and(|v| v.starts_with("sha-256=:") && v.ends_with(":"))
    );
    assert_eq!(header(&headers, "accept-ranges"), Some("bytes"));
    assert_eq!(blob_files(&lab).len(), 1);

    // The same content again, in another build: one blob still.
    let second = new_build(&http, t, "main", "abc124");
    let r = upload(
        &http,
        t,
        &second,
        "Image",
        &format!("kind=kernel&sha256={}", sha(&data)),
        &data,
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        blob_files(&lab).len(),
        1,
        "identical content is stored once"
    );
    // And the same name again with the same bytes is idempotent; other bytes conflict.
    let r = upload(&http, t, &second, "Image", "kind=kernel", &data);
    assert_eq!(r.status, 200, "{}", r.text);
    let r = upload(&http, t, &second, "Image", "kind=kernel", b"other");
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.body["field"], "name");

    // A corrupt upload (the body is not what its sha256 says) is refused; nothing shows.
    let before = blob_files(&lab);
    let r = upload(
        &http,
        t,
        &second,
        "rootfs.ext4",
        &format!("kind=rootfs&sha256={}", sha(b"what was meant")),
        b"what arrived",
    );
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["field"], "sha256");
    assert!(
        r.content_type.starts_with("application/problem+json"),
        "{}",
        r.content_type
    );
    assert_eq!(
        blob_files(&lab),
        before,
        "no blob and no temporary file is left"
    );
    let listed = http.get(&format!("/api/v1/artifacts?build={second}"), t);
    assert_eq!(
        listed.body["items"].as_array().unwrap().len(),
        1,
        "{}",
        listed.text
    );
    // Bad input names its field.
    let r = upload(&http, t, &second, "x", "kind=vmlinuz", b"x");
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (400, Some("kind")),
        "{}",
        r.text
    );
    let r = upload(&http, t, &second, ".hidden", "kind=other", b"x");
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (422, Some("name")),
        "{}",
        r.text
    );
    let r = upload(&http, t, "not-a-ulid", "x", "kind=other", b"x");
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (400, Some("id")),
        "{}",
        r.text
    );
    let r = upload(&http, t, &ulid_like(), "x", "kind=other", b"x");
    assert_eq!(r.status, 404, "{}", r.text);

    // Ranges: exactly the bytes asked for, 206 with Content-Range; 416 outside.
    let path = format!("/api/v1/builds/{build}/artifacts/Image");
    let (status, headers, body) = get_bytes(&server.url, t, &path, Some("bytes=1000-1999"));
    assert_eq!(status, 206);
    assert_eq!(body, data[1000..2000]);
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes 1000-1999/{}", data.len()).as_str())
    );
    let (status, _, body) = get_bytes(&server.url, t, &path, Some("bytes=-10"));
    assert_eq!(status, 206);
    assert_eq!(body, data[data.len() - 10..]);
    let (status, headers, _) = get_bytes(
        &server.url,
        t,
        &path,
        Some(&format!("bytes={}-", data.len())),
    );
    assert_eq!(status, 416);
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes */{}", data.len()).as_str())
    );
    let (status, _, _) = get_bytes(&server.url, t, "/api/v1/artifacts/abc", None);
    assert_eq!(status, 400);
    let (status, _, _) = get_bytes(
        &server.url,
        t,
        &format!("/api/v1/artifacts/{}", sha(b"none")),
        None,
    );
    assert_eq!(status, 404);

    // Events were recorded for the builds and the stored artifacts.
    let events = http.get("/api/v1/events?limit=1000", t).body;
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"build.created") && kinds.contains(&"artifact.stored"),
        "{kinds:?}"
    );
    within();
}

fn ulid_like() -> String {
    "01ARZ3NDEKTSV4RRFFQ69G5FAV".to_string()
}

#[test]
fn latest_of_a_branch_is_the_newest_builds_artifact() {
    let within = deadline(Duration::from_secs(60));
    let lab = Lab::new();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let dir = tempfile::tempdir().unwrap();
    for (branch, commit, content) in [
        ("main", "c1", b"old kernel".as_slice()),
        ("main", "c2", b"new kernel"),
        ("dev", "c3", b"dev kernel"),
    ] {
        let b = new_build(&http, t, branch, commit);
        let r = upload(&http, t, &b, "Image", "kind=kernel", content);
        assert_eq!(r.status, 201, "{}", r.text);
    }
    // The newest build of main has only a device tree so far.
    let b = new_build(&http, t, "main", "c4");
    let r = upload(&http, t, &b, "board.dtb", "kind=dtb", b"dtb");
    assert_eq!(r.status, 201, "{}", r.text);
    let out_file = dir.path().join("kernel");
    let out = cli(
        &server.url,
        t,
        &[
            "artifacts",
            "get",
            "--branch",
            "main",
            "--latest",
            "--kind",
            "kernel",
            "-o",
            out_file.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&out_file).unwrap(), b"new kernel");
    let r = http.get("/api/v1/artifacts/latest?branch=main&kind=kernel", t);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["commit"], "c2");
    let r = http.get("/api/v1/artifacts/latest?branch=main&kind=rootfs", t);
    assert_eq!(r.status, 404, "{}", r.text);
    let r = http.get("/api/v1/artifacts/latest?kind=kernel", t);
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (400, Some("branch")),
        "{}",
        r.text
    );
    // Nothing is written where the download was to go when it fails.
    let missing = dir.path().join("missing");
    let out = cli(
        &server.url,
        t,
        &[
            "artifacts",
            "get",
            "--branch",
            "nope",
            "--latest",
            "--kind",
            "kernel",
            "-o",
            missing.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(!missing.exists());
    within();
}

fn build_exists(http: &Http, t: &str, id: &str) -> bool {
    http.get(&format!("/api/v1/builds/{id}"), t).status == 200
}

#[test]
fn gc_dry_run_reports_without_deleting_and_needs_an_operator() {
    let within = deadline(Duration::from_secs(60));
    let lab = Lab::new();
    lab.set("artifacts", "max_age", "\"1s\"");
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let old = kernel_build(&http, t, "c1", b"old");
    let kept = kernel_build(&http, t, "c2", b"kept");
    let tagged = kernel_build(&http, t, "c3", b"tagged");
    let user = http.create_token(t, "ann", "user");
    let r = http.post(&format!("/api/v1/builds/{kept}/pin"), &user, json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["pinned"], true);
    let out = cli(
        &server.url,
        &user,
        &["artifacts", "tag", &tagged, "release"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    std::thread::sleep(Duration::from_millis(1500));

    // A user may pin and tag but not collect garbage.
    let r = http.call(
        "POST",
        "/api/v1/artifacts/gc?dry_run=true",
        Some(&user),
        None,
    );
    assert_eq!(r.status, 403, "{}", r.text);
    let out = cli(&server.url, &user, &["artifacts", "gc", "--dry-run"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));

    let files = blob_files(&lab);
    assert_eq!(files.len(), 3);
    let out = cli(&server.url, t, &["artifacts", "gc", "--dry-run", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["dry_run"], true);
    let ids: Vec<&str> = report["builds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert_eq!(ids, vec![old.as_str()], "{report}");
    assert_eq!(report["builds"][0]["reason"], "age");
    assert_eq!(report["blobs"], json!([sha(b"old")]));
    // Nothing went.
    assert!(build_exists(&http, t, &old));
    assert_eq!(blob_files(&lab), files);

    // The real pass deletes what the dry run listed, and only that.
    let r = http.call("POST", "/api/v1/artifacts/gc", Some(t), None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["dry_run"], false);
    assert_eq!(r.body["blobs"], json!([sha(b"old")]));
    assert!(!build_exists(&http, t, &old));
    assert!(build_exists(&http, t, &kept) && build_exists(&http, t, &tagged));
    assert_eq!(blob_files(&lab).len(), 2);
    let events = http.get("/api/v1/events?limit=1000", t).body;
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "build.deleted" && e["subject"] == old.as_str()),
        "{events}"
    );
    within();
}

#[test]
fn retention_removes_an_old_unpinned_build_and_keeps_a_pinned_one() {
    let within = deadline(Duration::from_secs(60));
    let lab = Lab::new();
    lab.set("artifacts", "max_age", "\"2s\"");
    lab.set("artifacts", "interval", "\"300ms\"");
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let old = kernel_build(&http, t, "c1", b"old");
    let pinned = kernel_build(&http, t, "c2", b"pinned");
    let out = cli(&server.url, t, &["artifacts", "pin", &pinned]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(blob_files(&lab).len(), 2);
    wait_for("the old build to go", Duration::from_secs(20), || {
        (!build_exists(&http, t, &old) && blob_files(&lab).len() == 1).then_some(())
    });
    assert!(build_exists(&http, t, &pinned));
    let only: &Path = &blob_files(&lab)[0];
    assert_eq!(std::fs::read(only).unwrap(), b"pinned");
    let r = http.get(&format!("/api/v1/artifacts/{}", sha(b"old")), t);
    assert_eq!(r.status, 404, "{}", r.text);
    // Unpinned, it goes too.
    let out = cli(&server.url, t, &["artifacts", "unpin", &pinned]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("the unpinned build to go", Duration::from_secs(20), || {
        (!build_exists(&http, t, &pinned) && blob_files(&lab).is_empty()).then_some(())
    });
    within();
}

#[test]
fn a_blob_being_downloaded_is_kept_until_its_download_ends() {
    let within = deadline(Duration::from_secs(90));
    let lab = Lab::new();
    lab.set("artifacts", "max_age", "\"1s\"");
    let server = lab.start();
    let http = server.http();
    let t = lab.token.clone();
    // Large enough that the response cannot sit whole in socket buffers.
    let data: Vec<u8> = (0..32 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let b = new_build(&http, &t, "main", "c1");
    assert_eq!(
        upload(&http, &t, &b, "rootfs.ext4", "kind=rootfs", &data).status,
        201
    );
    std::thread::sleep(Duration::from_millis(1200));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = server.url.clone();
    let got = rt.block_on(async {
        use futures::StreamExt;
        let resp = reqwest::Client::new()
            .get(format!("{url}/api/v1/builds/{b}/artifacts/rootfs.ext4"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.bytes_stream();
        let mut got = body.next().await.unwrap().unwrap().to_vec();
        // While the download is open, retention deletes the build but not its blob.
        let gc = reqwest::Client::new()
            .post(format!("{url}/api/v1/artifacts/gc"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        let report: Value = gc.json().await.unwrap();
        assert_eq!(report["builds"].as_array().unwrap().len(), 1, "{report}");
        assert_eq!(report["skipped_in_use"], json!([sha(&data)]), "{report}");
        assert_eq!(report["blobs"], json!([]), "{report}");
        while let Some(chunk) = body.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        got
    });
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the download is whole and intact");
    // Once the download ended, the next pass takes the blob.
    wait_for("the blob to go", Duration::from_secs(10), || {
        let r = http.call("POST", "/api/v1/artifacts/gc", Some(&lab.token), None);
        (r.status == 200 && blob_files(&lab).is_empty()).then_some(())
    });
    within();
}

/// Blob objects (`…/sha256/<hex>`) the S3 server holds under the lab's prefix.
fn bucket_blobs(s3: &s3_server::S3Server) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = s3
        .files()
        .into_iter()
        .filter(|p| {
            p.parent().and_then(|d| d.file_name()) == Some("sha256".as_ref())
                && p.file_name().is_some_and(|n| n.len() == 64)
        })
        .collect();
    out.sort();
    out
}

/// `[artifacts] store = "s3://…"` on a real S3-compatible server (s3s-fs on loopback): the
/// same API works, the bytes are in the bucket and none on local disk, ranges are exact,
/// retention deletes from the bucket, and with the bucket gone an upload fails with a 503
/// naming the cause while nothing is recorded as stored.
#[test]
fn artifacts_round_trip_through_an_s3_bucket() {
    let within = deadline(Duration::from_secs(120));
    let Some(s3) = s3_server::S3Server::start("lab-artifacts") else {
        return;
    };
    let lab = Lab::new();
    lab.set(
        "artifacts",
        "store",
        "\"s3://lab-artifacts/testfarm/site-a\"",
    );
    lab.set("artifacts", "max_age", "\"3s\"");
    lab.set("artifacts", "interval", "\"300ms\"");
    let config = std::fs::read_to_string(lab.config()).unwrap();
    let config = config.replacen(
        "\n[secrets]\n",
        &format!(
            "\n[secrets]\ns3_key = \"{}\"\ns3_secret = {{ file = \"s3.secret\" }}\n",
            s3_server::ACCESS_KEY
        ),
        1,
    );
    std::fs::write(lab.path().join("s3.secret"), s3_server::SECRET_KEY).unwrap();
    std::fs::write(
        lab.config(),
        format!(
            "{config}\n[artifacts.s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\naccess_key_id = \"s3_key\"\nsecret_access_key = \"s3_secret\"\n",
            s3.endpoint
        ),
    )
    .unwrap();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;

    // 10 MiB: more than one multipart part.
    let data: Vec<u8> = (0..10u32 << 20).map(|i| (i % 251) as u8).collect();
    let b = kernel_build(&http, t, "c1", &data);
    let pinned = kernel_build(&http, t, "c2", b"pinned kernel");
    let out = cli(&server.url, t, &["artifacts", "pin", &pinned]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(bucket_blobs(&s3).len(), 2, "{:?}", s3.files());
    assert!(blob_files(&lab).is_empty(), "nothing on local disk");
    assert!(
        bucket_blobs(&s3)
            .iter()
            .all(|p| p.to_string_lossy().contains("testfarm/site-a/sha256/")),
        "under the configured prefix"
    );

    let path = format!("/api/v1/artifacts/{}", sha(&data));
    let (status, headers, body) = get_bytes(&server.url, t, &path, None);
    assert_eq!(status, 200);
    assert_eq!(body.len(), data.len());
    assert!(body == data, "the download is the upload");
    assert!(header(&headers, "content-length").is_some());
    let (status, headers, body) = get_bytes(&server.url, t, &path, Some("bytes=8388600-8388615"));
    assert_eq!(status, 206);
    assert_eq!(body, data[8_388_600..8_388_616].to_vec());
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes 8388600-8388615/{}", data.len()).as_str())
    );

    // Retention deletes the old unpinned build's object from the bucket.
    wait_for("the old build to go", Duration::from_secs(30), || {
        (!build_exists(&http, t, &b) && bucket_blobs(&s3).len() == 1).then_some(())
    });
    assert!(build_exists(&http, t, &pinned));

    // The bucket goes away: the upload fails with the cause, nothing is recorded.
    drop(s3);
    let b2 = new_build(&http, t, "main", "c3");
    let r = upload(&http, t, &b2, "Image", "kind=kernel", b"cannot be stored");
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(
        r.text.contains("object store"),
        "names the cause: {}",
        r.text
    );
    let r = http.get(&format!("/api/v1/builds/{b2}"), t);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["artifacts"].as_array().map(Vec::len),
        Some(0),
        "{}",
        r.text
    );
    let r = http.get("/healthz", t);
    assert_eq!(r.status, 200, "the server keeps running");
    within();
}
