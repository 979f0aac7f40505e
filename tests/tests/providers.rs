//! End-to-end tests (root) of the LLM providers beyond OpenAI, Anthropic and
//! Gemini: Bedrock Runtime (its binary event stream included), Vertex AI,
//! Azure OpenAI, Cohere, Ollama and OpenAI-compatible servers, each behind
//! nginx with its own mock provider; and streaming time (time to first
//! token, time per output token, stream events) against a paced mock.
//!
//! Every expected value comes from what the mock provider sends (`mock::Api`
//! documents each API's usage; tokens, cache counts and content events are
//! compared with what each `mock::Answer` notes it sent), from the
//! configured upstream names and from the upstream `Host` nginx sends
//! (`HOSTED`: OpenAI-compatible servers named by their host alone).

use std::time::Duration;

use llm_proxy_e2e::{
    client::Client,
    harness::{Agent, Nginx, serial},
    mock::{Answer, Api, MockProvider},
    modes::{self, for_each_mode},
};
use serde_json::Value;

/// One mock provider per configured upstream name, all behind one nginx
/// (`/NAME/...` and `/NAME-ka/...`).
struct Upstreams {
    mocks: Vec<(&'static str, MockProvider)>,
    nginx: Nginx,
}

/// Upstreams whose configured names name no provider (`compat1`...), each
/// proxied with the `Host` of an OpenAI-compatible provider's API: only that
/// host tells the agent who serves them. (route, Host, `gen_ai.provider.name`)
const HOSTED: [(&str, &str, &str); 3] = [
    ("compat1", "api.groq.com", "groq"),
    ("compat2", "api.together.xyz", "together_ai"),
    ("compat3", "openrouter.ai", "openrouter"),
];

impl Upstreams {
    fn start(names: &[&'static str]) -> Self {
        Self::start_with_hosts(names, &[])
    }

    /// `start`, nginx sending the upstream `Host` given per route (`(route, host)`).
    fn start_with_hosts(names: &[&'static str], hosts: &[(&str, &str)]) -> Self {
        let mocks: Vec<_> = names.iter().map(|n| (*n, MockProvider::start(0).unwrap())).collect();
        let routes: Vec<(&str, u16)> = mocks.iter().map(|(n, m)| (*n, m.port)).collect();
        let nginx = Nginx::start_private_with_hosts(&routes, hosts);
        Self { mocks, nginx }
    }

    /// The answer each case got, from its upstream's mock (each mock answers
    /// its cases in the order they were sent, one at a time).
    fn answers_in_order_of(&self, cases: &[Case]) -> Vec<Answer> {
        let mut by_upstream: Vec<(&str, std::vec::IntoIter<Answer>)> =
            self.mocks.iter().map(|(n, m)| (*n, m.answers().into_iter())).collect();
        let answers: Vec<Answer> = cases
            .iter()
            .map(|case| {
                let (_, answers) = by_upstream.iter_mut().find(|(n, _)| *n == case.upstream).expect("a mock");
                let answer = answers.next().unwrap_or_else(|| panic!("no answer for {}", case.path));
                assert_eq!(answer.status, case.status, "{}: {answer:?}", case.path);
                answer
            })
            .collect();
        for (name, rest) in by_upstream {
            assert_eq!(rest.len(), 0, "{name} answered more than its cases");
        }
        answers
    }

    fn agent(&self, mode: modes::AttachMode) -> Agent {
        for (_, m) in &self.mocks {
            m.reset();
        }
        let mut args: Vec<String> =
            vec!["--exe".into(), self.nginx.exe.display().to_string(), "--print-requests".into()];
        args.extend(mode.args().map(String::from));
        for (name, m) in &self.mocks {
            args.extend(["--provider".to_string(), format!("{name}=127.0.0.1:{}", m.port)]);
        }
        let agent = Agent::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
        agent.wait_for_nginx();
        agent
    }
}

/// One exchange and what both of its records must say.
struct Case {
    /// Configured upstream name (the nginx route: `/NAME/` or `/NAME-ka/` for streams).
    upstream: &'static str,
    /// Path and query the provider sees.
    path: &'static str,
    status: u16,
    /// `provider` of the client record (from the path's shape) and of the
    /// upstream record (from the configured name).
    client_provider: &'static str,
    upstream_provider: &'static str,
    operation: &'static str,
    model_requested: Option<&'static str>,
    model_returned: Option<&'static str>,
    streaming: bool,
    error_type: Option<&'static str>,
    deployment: Option<&'static str>,
    stream_events: Option<u64>,
}

/// The client sends `"model":"gpt-4o-mini"` in every body.
const BODY_MODEL: Option<&str> = Some("gpt-4o-mini");

fn cases() -> Vec<Case> {
    let base = Case {
        upstream: "",
        path: "",
        status: 200,
        client_provider: "",
        upstream_provider: "",
        operation: "chat",
        model_requested: BODY_MODEL,
        model_returned: None,
        streaming: false,
        error_type: None,
        deployment: None,
        stream_events: None,
    };
    let bedrock =
        Case { upstream: "bedrock", client_provider: "aws.bedrock", upstream_provider: "aws.bedrock", ..base };
    let vertex = || Case {
        upstream: "vertex",
        client_provider: "gcp.vertex_ai",
        upstream_provider: "gcp.vertex_ai",
        operation: "generate_content",
        model_requested: Some("gemini-2.0-flash"),
        model_returned: Some("gemini-2.0-flash"),
        ..base
    };
    let vertex_claude = || Case {
        model_requested: Some("claude-sonnet-4@20250514"),
        model_returned: Some("claude-sonnet-4"),
        operation: "chat",
        ..vertex()
    };
    let cohere = || Case { upstream: "cohere", client_provider: "cohere", upstream_provider: "cohere", ..base };
    let ollama = || Case {
        upstream: "ollama",
        client_provider: "ollama",
        upstream_provider: "ollama",
        model_returned: Some("llama3.2"),
        ..base
    };
    let compatible = |upstream, provider| Case {
        upstream,
        client_provider: "openai",
        upstream_provider: provider,
        model_returned: Some("gpt-4o-mini"),
        ..base
    };
    let mistral = || Case { model_returned: Some("mistral-small-latest"), ..compatible("mistral", "mistral_ai") };
    let deepseek = || Case { model_returned: Some("deepseek-chat"), ..compatible("deepseek", "deepseek") };
    // The mock's usage-only streams (`usage=1`) name no model in their chunks.
    let unnamed = |upstream, provider| Case { model_returned: None, ..compatible(upstream, provider) };
    vec![
        Case {
            path: "/model/anthropic.claude-3-5-haiku-20241022-v1:0/converse",
            model_requested: Some("anthropic.claude-3-5-haiku-20241022-v1:0"),
            ..bedrock
        },
        Case {
            path: "/model/amazon.nova-lite-v1:0/converse-stream?events=5&interval_ms=30",
            model_requested: Some("amazon.nova-lite-v1:0"),
            streaming: true,
            // messageStart, 4 deltas, contentBlockStop, messageStop, metadata.
            stream_events: Some(8),
            ..bedrock
        },
        Case {
            path: "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke",
            model_requested: Some("anthropic.claude-3-haiku-20240307-v1:0"),
            model_returned: Some("claude-3-haiku-20240307"),
            ..bedrock
        },
        Case {
            path: "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke-with-response-stream?events=4&interval_ms=30",
            model_requested: Some("anthropic.claude-3-haiku-20240307-v1:0"),
            model_returned: Some("claude-3-haiku-20240307"),
            streaming: true,
            stream_events: Some(5),
            ..bedrock
        },
        // InvokeModel with the other model families' own bodies (the
        // family comes from the model id; `mock::InvokeBody` has their usage).
        Case {
            path: "/model/meta.llama3-8b-instruct-v1:0/invoke",
            model_requested: Some("meta.llama3-8b-instruct-v1:0"),
            ..bedrock
        },
        Case {
            path: "/model/meta.llama3-8b-instruct-v1:0/invoke-with-response-stream?events=4&interval_ms=30",
            model_requested: Some("meta.llama3-8b-instruct-v1:0"),
            streaming: true,
            stream_events: Some(5),
            ..bedrock
        },
        Case {
            path: "/model/mistral.mistral-large-2402-v1:0/invoke",
            model_requested: Some("mistral.mistral-large-2402-v1:0"),
            ..bedrock
        },
        Case {
            path: "/model/mistral.mistral-large-2402-v1:0/invoke-with-response-stream?events=4&interval_ms=30",
            model_requested: Some("mistral.mistral-large-2402-v1:0"),
            streaming: true,
            stream_events: Some(5),
            ..bedrock
        },
        Case { path: "/model/cohere.command-r-v1:0/invoke", model_requested: Some("cohere.command-r-v1:0"), ..bedrock },
        Case {
            path: "/model/cohere.command-r-v1:0/invoke-with-response-stream?events=4&interval_ms=30",
            model_requested: Some("cohere.command-r-v1:0"),
            streaming: true,
            stream_events: Some(5),
            ..bedrock
        },
        Case {
            path: "/model/amazon.titan-text-express-v1/invoke",
            model_requested: Some("amazon.titan-text-express-v1"),
            ..bedrock
        },
        Case {
            path: "/model/amazon.titan-text-express-v1/invoke-with-response-stream?events=4&interval_ms=30",
            model_requested: Some("amazon.titan-text-express-v1"),
            streaming: true,
            stream_events: Some(5),
            ..bedrock
        },
        Case {
            path: "/model/us.amazon.nova-lite-v1:0/invoke",
            model_requested: Some("us.amazon.nova-lite-v1:0"),
            ..bedrock
        },
        Case {
            path: "/model/us.amazon.nova-lite-v1:0/invoke-with-response-stream?events=4&interval_ms=30",
            model_requested: Some("us.amazon.nova-lite-v1:0"),
            streaming: true,
            // messageStart, 3 deltas, contentBlockStop, messageStop, metadata.
            stream_events: Some(7),
            ..bedrock
        },
        Case {
            path: "/model/amazon.nova-lite-v1:0/converse?status=429",
            status: 429,
            model_requested: Some("amazon.nova-lite-v1:0"),
            error_type: Some("ThrottlingException"),
            ..bedrock
        },
        Case {
            path: "/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent",
            ..vertex()
        },
        Case {
            path: "/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.0-flash:streamGenerateContent?alt=sse&events=5&interval_ms=20",
            streaming: true,
            stream_events: Some(6),
            ..vertex()
        },
        Case {
            path: "/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent?status=429",
            status: 429,
            model_returned: None,
            error_type: Some("RESOURCE_EXHAUSTED"),
            ..vertex()
        },
        Case {
            path: "/v1/projects/p1/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict",
            ..vertex_claude()
        },
        Case {
            path: "/v1/projects/p1/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict?events=5&interval_ms=20",
            streaming: true,
            stream_events: Some(7),
            ..vertex_claude()
        },
        Case {
            upstream: "azure",
            path: "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21",
            client_provider: "azure.ai.openai",
            upstream_provider: "azure.ai.openai",
            model_returned: Some("gpt-4o-mini"),
            deployment: Some("prod-4o"),
            ..base
        },
        Case {
            upstream: "azure",
            path: "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21&events=4&interval_ms=20&usage=1",
            client_provider: "azure.ai.openai",
            upstream_provider: "azure.ai.openai",
            streaming: true,
            // The mock's chunks name no model; usage comes in the last chunk.
            deployment: Some("prod-4o"),
            stream_events: Some(5),
            ..base
        },
        Case { path: "/v2/chat", ..cohere() },
        Case { path: "/v2/chat?events=4&interval_ms=20", streaming: true, stream_events: Some(5), ..cohere() },
        Case { path: "/api/chat", ..ollama() },
        Case { path: "/api/chat?events=3&interval_ms=20", streaming: true, stream_events: Some(4), ..ollama() },
        Case { path: "/api/generate", operation: "text_completion", ..ollama() },
        Case {
            path: "/api/generate?events=5&interval_ms=20",
            operation: "text_completion",
            streaming: true,
            stream_events: Some(6),
            ..ollama()
        },
        Case { path: "/v1/chat/completions?api=mistral", ..mistral() },
        // A role-only delta, 3 content chunks, usage in the finishing chunk.
        streamed("/v1/chat/completions?api=mistral&events=4&interval_ms=20", mistral()),
        Case { path: "/chat/completions?api=deepseek", ..deepseek() },
        // A role-only delta, 3 content chunks, then the usage chunk (cache hits named).
        streamed("/chat/completions?api=deepseek&events=4&interval_ms=20", deepseek()),
        Case { path: "/openai/v1/chat/completions", ..compatible("groq", "groq") },
        // OpenAI-compatible servers known by the upstream Host alone (`HOSTED`):
        // OpenAI's paths and bodies, the host's provider on the upstream record.
        Case { path: "/openai/v1/chat/completions", ..compatible("compat1", "groq") },
        // 3 content chunks, then the usage chunk (prompt 21, completion 55).
        streamed("/openai/v1/chat/completions?events=4&interval_ms=20&usage=1", unnamed("compat1", "groq")),
        Case { path: "/v1/chat/completions", ..compatible("compat2", "together_ai") },
        streamed("/v1/chat/completions?events=4&interval_ms=20&usage=1", unnamed("compat2", "together_ai")),
        Case { path: "/api/v1/chat/completions", ..compatible("compat3", "openrouter") },
    ]
}

/// `case` streamed from `path`, an OpenAI-compatible server's `events=4`
/// stream: 5 SSE events in its record.
fn streamed(path: &'static str, case: Case) -> Case {
    Case { path, streaming: true, stream_events: Some(5), ..case }
}

/// The sum of a scrape's `metric` series carrying every one of `labels`
/// (`name="value"`, as exposed).
fn sum_with(s: &llm_proxy_e2e::metrics::Scrape, metric: &str, labels: &[String]) -> u64 {
    s.series
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{metric}{{")) && labels.iter().all(|l| k.contains(l.as_str())))
        .map(|(_, v)| *v as u64)
        .sum()
}

#[test]
fn every_provider_api_is_recorded_exactly_on_both_sides() {
    let _serial = serial();
    let mut names = vec!["bedrock", "vertex", "azure", "cohere", "ollama", "mistral", "deepseek", "groq"];
    names.extend(HOSTED.map(|(route, _, _)| route));
    let setup = Upstreams::start_with_hosts(&names, &HOSTED.map(|(route, host, _)| (route, host)));
    let cases = cases();
    for_each_mode(modes::UPROBES_AND_SOCKETS, |mode| {
        let agent = setup.agent(mode);
        let mut c = Client::connect(setup.nginx.port).unwrap();
        for case in &cases {
            let route = if case.streaming { format!("{}-ka", case.upstream) } else { case.upstream.to_string() };
            let status = c.request(&format!("/{route}{}", case.path), 300, false).unwrap();
            assert_eq!(status, case.status, "{}", case.path);
        }
        drop(c);
        agent.wait_for_printed_records(cases.len(), cases.len(), Duration::from_secs(20));
        let (client, upstream) = (agent.printed_records("client"), agent.printed_records("upstream"));
        assert_eq!((client.len(), upstream.len()), (cases.len(), cases.len()), "{client:?}\n{upstream:?}");
        let answers = setup.answers_in_order_of(&cases);
        for (case, answer) in cases.iter().zip(&answers) {
            let endpoint = case.path.split('?').next().unwrap();
            let route = if case.streaming { format!("{}-ka", case.upstream) } else { case.upstream.to_string() };
            let client_endpoint = format!("/{route}{endpoint}");
            for (side, records, endpoint, provider) in [
                ("client", &client, client_endpoint.as_str(), case.client_provider),
                ("upstream", &upstream, endpoint, case.upstream_provider),
            ] {
                let matching: Vec<&Value> = records
                    .iter()
                    .filter(|r| {
                        r["endpoint"] == endpoint
                            && r["status"] == case.status
                            && r["streaming"] == case.streaming
                            && r["upstream_provider"] == case.upstream
                    })
                    .collect();
                assert_eq!(matching.len(), 1, "{side} {}: {records:?}", case.path);
                let r = matching[0];
                let what = format!("{side} {}: {r}", case.path);
                assert_eq!(r["provider"], provider, "{what}");
                assert_eq!(r["operation"], case.operation, "{what}");
                assert_eq!(r["model_requested"].as_str(), case.model_requested, "{what}");
                assert_eq!(r["model_returned"].as_str(), case.model_returned, "{what}");
                assert_eq!(r["streaming"], case.streaming, "{what}");
                assert_eq!(r["error_type"].as_str(), case.error_type, "{what}");
                assert_eq!(r["deployment"].as_str(), case.deployment, "{what}");
                // Exactly the usage the mock put in this answer (no API
                // here reports reasoning apart).
                let tokens =
                    ["input", "output", "cache_read", "cache_creation", "reasoning"].map(|k| r["tokens"][k].as_u64());
                let (input, output) = (answer.usage.map(|u| u.0), answer.usage.map(|u| u.1));
                assert_eq!(tokens, [input, output, answer.cache.0, answer.cache.1, None], "{what}\nsent {answer:?}");
                assert_eq!(r["stream_events"].as_u64(), case.stream_events, "{what}");
                // The finish reason the mock sent (none with an error).
                let reasons: Vec<&str> =
                    r["finish_reasons"].as_array().expect(&what).iter().filter_map(Value::as_str).collect();
                assert_eq!(reasons, answer.finish_reasons, "{what}");
                let documented = Api::of(case.path).finish_reason().filter(|_| case.status == 200);
                assert_eq!(reasons, Vec::from_iter(documented), "{what}");
                // The events with generated text the mock sent (null when not streamed).
                assert_eq!(r["content_events"].as_u64(), answer.content_events, "{what}\nsent {answer:?}");
                assert_eq!(case.streaming, answer.content_events.is_some(), "{what}");
                assert_eq!(r["time_to_first_token_ms"].as_f64().is_some(), case.streaming, "{what}");
            }
        }
        // The exposition labels the upstream exchanges of each provider
        // named by the Host (with the configured `groq`'s): each counted
        // once, with the tokens the mock sent in it.
        let s = agent.scrape();
        for (_, _, provider) in HOSTED {
            let (mut requests, mut input, mut output) = (0, 0, 0);
            for (case, answer) in cases.iter().zip(&answers).filter(|(c, _)| c.upstream_provider == provider) {
                let (i, o) = answer.usage.unwrap_or_else(|| panic!("{}: no usage sent", case.path));
                (requests, input, output) = (requests + 1, input + i, output + o);
            }
            assert!(requests > 0, "no case for {provider}");
            let labels = |more: &[&str]| {
                let mut l = vec!["side=\"upstream\"".to_string(), format!("gen_ai_provider_name=\"{provider}\"")];
                l.extend(more.iter().map(|m| m.to_string()));
                l
            };
            let what = format!("{provider} in\n{}", s.text);
            assert_eq!(sum_with(&s, "llm_requests_total", &labels(&[])), requests, "{what}");
            assert_eq!(sum_with(&s, "llm_tokens_total", &labels(&["gen_ai_token_type=\"input\""])), input, "{what}");
            assert_eq!(sum_with(&s, "llm_tokens_total", &labels(&["gen_ai_token_type=\"output\""])), output, "{what}");
        }
    });
}

/// Tolerance of the streaming times: the capture stamps each event when the
/// proxy reads (upstream side) or writes (client side) it, so a time from
/// the request's start can be late by scheduling on a loaded machine but
/// never early (2 ms for clock granularity); a span between two events can
/// shrink when its first event was the late one.
const EARLY_MS: f64 = 2.0;
const LATE_MS: f64 = 100.0;
const SPAN_EARLY_MS: f64 = 50.0;

fn within(what: &str, measured: f64, expected: f64, early: f64, late: f64) {
    assert!(
        measured >= expected - early && measured <= expected + late,
        "{what}: {measured} ms, expected {expected} ms (-{early}/+{late})"
    );
}

#[test]
fn streaming_time_follows_a_paced_schedule_and_role_only_deltas_are_not_tokens() {
    let _serial = serial();
    let setup = Upstreams::start(&["openai", "bedrock"]);
    const INTERVAL: f64 = 150.0;
    for_each_mode(modes::UPROBES_AND_SOCKETS, |mode| {
        let agent = setup.agent(mode);
        let mut c = Client::connect(setup.nginx.port).unwrap();
        // OpenAI: a role-only delta at once, content events 1..=5 at
        // 150 ms steps, then the usage chunk (completion 55) and [DONE].
        let openai = "/openai-ka/v1/chat/completions?events=6&interval_ms=150&usage=1&role_first=1";
        assert_eq!(c.request(openai, 300, false).unwrap(), 200);
        // Bedrock ConverseStream: messageStart at once, deltas 1..=3 at
        // 150 ms steps, then the closing events with usage (output 9).
        let bedrock = "/bedrock-ka/model/amazon.nova-lite-v1:0/converse-stream?events=4&interval_ms=150";
        assert_eq!(c.request(bedrock, 300, false).unwrap(), 200);
        drop(c);
        agent.wait_for_printed_records(2, 2, Duration::from_secs(20));
        for side in ["client", "upstream"] {
            for r in agent.printed_records(side) {
                let what = format!("{side} {}", r["endpoint"]);
                let ms = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{what}: no {k} in {r}"));
                let (content_events, output_tokens, events) =
                    if r["provider"] == "aws.bedrock" { (3.0, 9.0, 7) } else { (5.0, 55.0, 7) };
                assert_eq!(r["stream_events"], events, "{what}: {r}");
                // The first content event is the one at 150 ms: the role-only
                // delta and messageStart, sent at once, do not count.
                within(
                    &format!("{what} time to first token"),
                    ms("time_to_first_token_ms"),
                    INTERVAL,
                    EARLY_MS,
                    LATE_MS,
                );
                let span = (content_events - 1.0) * INTERVAL;
                let tpot = ms("time_per_output_token_ms");
                within(
                    &format!("{what} time per output token x (output - 1)"),
                    tpot * (output_tokens - 1.0),
                    span,
                    SPAN_EARLY_MS,
                    LATE_MS,
                );
                assert_eq!(r["content_events"], content_events as u64, "{what}: {r}");
            }
        }
        // Exported: 2 streams on each of 2 sides; one chunk gap per content
        // event after the first (4 for OpenAI, 2 for Bedrock).
        let s = agent.scrape();
        llm_proxy_e2e::metrics::promtool_check(&s.text, "prometheus text with streaming time");
        assert_eq!(s.sum("gen_ai_client_inference_time_to_first_chunk_seconds_count"), 4, "{}", s.text);
        assert_eq!(s.sum("gen_ai_client_inference_time_per_output_chunk_seconds_count"), 2 * (4 + 2));
        assert_eq!(s.sum("llm_time_per_output_token_seconds_count"), 4);
    });
}
