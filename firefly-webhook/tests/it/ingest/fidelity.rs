//! Byte-exact bodies and headers.

use super::*;

#[tokio::test]
async fn bodies_are_published_byte_for_byte() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher());
    let every_byte: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let not_utf8 = vec![
        0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1, 0xf0, 0x28, 0x8c, 0xbc,
    ];
    let form = b"name=J%C3%BCrgen+M&tags=a&tags=b&empty=&emoji=%F0%9F%94%A5".to_vec();
    let mut exact = vec![0u8; MIB];
    for (i, b) in exact.iter_mut().enumerate() {
        *b = u8::try_from(i % 251).unwrap();
    }
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("binary", every_byte, "application/octet-stream"),
        ("notutf8", not_utf8, "text/plain; charset=latin1"),
        ("empty", Vec::new(), "application/json"),
        ("form", form, "application/x-www-form-urlencoded"),
        ("onemib", exact, "application/octet-stream"),
    ];
    for (tag, bytes, content_type) in cases {
        let provider = unique(tag);
        let req = Request::post(url(&provider))
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_LENGTH, bytes.len())
            .body(Full::new(Bytes::from(bytes.clone())))
            .unwrap();
        let answer = send(svc.clone(), req).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{tag}");
        assert_eq!(answer.json()["payloadSize"], bytes.len(), "{tag}");
        let event = queued(&broker);
        assert_eq!(event.provider, provider);
        assert!(event.body == bytes, "{tag}: body differs");
        assert_eq!(event.content_type.as_deref(), Some(content_type));
    }
    assert!(broker.is_empty());
}

#[tokio::test]
async fn exactly_the_limit_is_accepted_one_more_byte_is_not() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher());
    let provider = unique("edge");

    // Exactly 1 MiB streamed in uneven chunks without Content-Length.
    let body = Bytes::from(vec![7u8; MIB]);
    let chunks: Vec<Result<Frame<Bytes>, Infallible>> = [0..1, 1..4097, 4097..MIB]
        .into_iter()
        .map(|r| Ok(Frame::data(body.slice(r))))
        .collect();
    let req = Request::post(url(&provider))
        .body(StreamBody::new(futures_util::stream::iter(chunks)))
        .unwrap();
    let answer = send(svc.clone(), req).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(queued(&broker).body, body);

    // 1 MiB + 1 declared.
    let big = Bytes::from(vec![7u8; MIB + 1]);
    let req = Request::post(url(&provider))
        .header(header::CONTENT_LENGTH, MIB + 1)
        .body(Full::new(big.clone()))
        .unwrap();
    let answer = send(svc.clone(), req).await;
    assert_rejected(
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        false,
    );

    // 1 MiB + 1 streamed: the last byte alone crosses the limit.
    let chunks: Vec<Result<Frame<Bytes>, Infallible>> = vec![
        Ok(Frame::data(big.slice(..MIB))),
        Ok(Frame::data(big.slice(MIB..))),
    ];
    let req = Request::post(url(&provider))
        .body(StreamBody::new(futures_util::stream::iter(chunks)))
        .unwrap();
    let answer = send(svc, req).await;
    assert_rejected(
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        false,
    );
    assert!(broker.is_empty());
}

#[tokio::test]
async fn multi_value_headers_are_kept_in_order() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher());
    let req = Request::post(url(&unique("headers")))
        .header("x-multi", "first")
        .header("set-cookie", "a=1")
        .header("x-multi", "second")
        .header("x-single", "only")
        .header("x-multi", "third")
        .header("set-cookie", "b=2")
        .header(
            "x-binary",
            http::HeaderValue::from_bytes(&[0xe9, b'a', 0xff]).unwrap(),
        )
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let answer = send(svc, req).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(answer.json()["headerCount"], 7, "each value counts");

    let event = queued(&broker);
    let values = |name: &str| -> Vec<Vec<u8>> {
        event
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect()
    };
    assert_eq!(
        values("x-multi"),
        [b"first".to_vec(), b"second".to_vec(), b"third".to_vec()]
    );
    assert_eq!(values("set-cookie"), [b"a=1".to_vec(), b"b=2".to_vec()]);
    assert_eq!(values("x-single"), [b"only".to_vec()]);
    assert_eq!(values("x-binary"), [vec![0xe9, b'a', 0xff]]);
    assert_eq!(event.header_count(), 7);
}
