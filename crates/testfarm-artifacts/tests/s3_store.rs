//! `S3Store` against a real S3-compatible server (s3s-fs on loopback): streamed and
//! multipart puts, stored-once, refused content leaving nothing, ranges, delete, list, and
//! an unreachable endpoint failing with its cause.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod s3_server;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use s3_server::{ACCESS_KEY, S3Server, SECRET_KEY};
use testfarm_artifacts::{
    Blob, BlobError, BlobStore, ByteStream, Digest, PutOptions, S3Settings, S3Store,
};

const BUCKET: &str = "artifacts";

fn settings(endpoint: &str, prefix: &str) -> S3Settings {
    S3Settings {
        bucket: BUCKET.into(),
        prefix: prefix.into(),
        endpoint: Some(endpoint.into()),
        region: "us-east-1".into(),
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
        session_token: None,
        virtual_hosted: false,
    }
}

/// `n` chunks of `size` bytes, chunk i filled with byte i: never one buffer.
fn chunks(n: usize, size: usize) -> (ByteStream, Vec<u8>) {
    let all: Vec<u8> = (0..n).flat_map(|i| vec![i as u8; size]).collect();
    let stream = futures::stream::iter(
        (0..n).map(move |i| Ok::<_, std::io::Error>(Bytes::from(vec![i as u8; size]))),
    );
    (stream.boxed(), all)
}

async fn read_all(blob: Blob) -> Vec<u8> {
    let mut out = Vec::new();
    let mut s = blob.stream;
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("the S3 test took longer than 120 s")
}

#[tokio::test]
async fn blobs_round_trip_through_a_real_s3_server() {
    let Some(server) = S3Server::start(BUCKET) else {
        return;
    };
    bounded(async {
        let store = S3Store::new(&settings(&server.endpoint, "lab/one")).unwrap();
        store.check().await.unwrap();

        // Small, with its digest declared: one request, straight to its name.
        let small = b"vmlinuz bytes".to_vec();
        let d_small = Digest::of(&small);
        let stored = store
            .put(
                futures::stream::once(async { Ok(Bytes::from_static(b"vmlinuz bytes")) }).boxed(),
                PutOptions {
                    expected: Some(d_small),
                    max_size: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (stored.digest, stored.size, stored.created),
            (d_small, 13, true)
        );

        // 20 MiB without a declared digest: multipart into tmp/, then copied to its name.
        let (stream, big) = chunks(320, 64 * 1024);
        let d_big = Digest::of(&big);
        let stored = store.put(stream, PutOptions::default()).await.unwrap();
        assert_eq!(
            (stored.digest, stored.size, stored.created),
            (d_big, big.len() as u64, true)
        );

        // 12 MiB declared: multipart straight to its name.
        let (_, mid) = chunks(192, 64 * 1024);
        let mid: Vec<u8> = mid.iter().map(|b| b ^ 0x5a).collect();
        let d_mid = Digest::of(&mid);
        let stream = futures::stream::iter(
            mid.chunks(100_000)
                .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        )
        .boxed();
        let stored = store
            .put(
                stream,
                PutOptions {
                    expected: Some(d_mid),
                    max_size: None,
                },
            )
            .await
            .unwrap();
        assert!(stored.created);

        // Stored once, both ways of putting.
        let (again, _) = chunks(320, 64 * 1024);
        assert!(
            !store
                .put(again, PutOptions::default())
                .await
                .unwrap()
                .created
        );
        let (again, _) = chunks(320, 64 * 1024);
        let opts = PutOptions {
            expected: Some(d_big),
            max_size: None,
        };
        assert!(!store.put(again, opts).await.unwrap().created);

        // Content that is not what it claims, or too large: refused, nothing stored.
        let (wrong, _) = chunks(200, 64 * 1024);
        let err = store
            .put(
                wrong,
                PutOptions {
                    expected: Some(Digest::of(b"something else")),
                    max_size: None,
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, BlobError::Mismatch { .. }), "{err}");
        let (large, _) = chunks(200, 64 * 1024);
        let err = store
            .put(
                large,
                PutOptions {
                    expected: None,
                    max_size: Some(1 << 20),
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, BlobError::TooLarge { .. }), "{err}");
        drop(mid);

        let mut listed: Vec<_> = store
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|b| (b.digest, b.size))
            .collect();
        listed.sort();
        let mut want = vec![
            (d_small, 13),
            (d_big, big.len() as u64),
            (d_mid, 192 * 64 * 1024),
        ];
        want.sort();
        assert_eq!(
            listed, want,
            "exactly the three blobs, no temporary or refused ones"
        );

        // Whole and ranged reads.
        let whole = store.get_range(d_big, None).await.unwrap();
        assert_eq!(whole.size, big.len() as u64);
        assert_eq!(read_all(whole).await, big);
        let part = store.get_range(d_big, Some(65_530..65_546)).await.unwrap();
        assert_eq!(part.range, 65_530..65_546);
        assert_eq!(read_all(part).await, big[65_530..65_546].to_vec());
        let err = store.get_range(d_small, Some(10..14)).await.unwrap_err();
        assert!(
            matches!(err, BlobError::RangeNotSatisfiable { size: 13, .. }),
            "{err}"
        );
        let missing = Digest::of(b"never stored");
        assert!(matches!(
            store.get_range(missing, None).await.unwrap_err(),
            BlobError::NotFound(_)
        ));

        // Delete says whether there was a blob.
        assert!(store.delete(d_small).await.unwrap());
        assert!(!store.delete(d_small).await.unwrap());
        assert_eq!(store.list().await.unwrap().len(), 2);

        // Another prefix in the same bucket sees none of it.
        let other = S3Store::new(&settings(&server.endpoint, "lab/two")).unwrap();
        assert!(other.list().await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn wrong_credentials_and_an_unreachable_endpoint_fail_with_the_cause() {
    let Some(server) = S3Server::start(BUCKET) else {
        return;
    };
    bounded(async {
        let mut bad = settings(&server.endpoint, "");
        bad.secret_access_key = "not-the-secret".into();
        let store = S3Store::new(&bad).unwrap();
        let err = store.check().await.unwrap_err();
        assert!(matches!(err, BlobError::Remote(_)), "{err}");

        // Nothing listens on port 9 of loopback: fails after the bounded retries.
        let store = S3Store::new(&settings("http://127.0.0.1:9", "")).unwrap();
        let started = std::time::Instant::now();
        let (stream, _) = chunks(4, 1024);
        let err = store.put(stream, PutOptions::default()).await.unwrap_err();
        assert!(matches!(err, BlobError::Remote(_)), "{err}");
        assert!(
            err.to_string().contains("127.0.0.1:9"),
            "names where: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(60));
    })
    .await;
}
