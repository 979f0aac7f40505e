//! The LLM providers this agent recognises, one table entry each: the names
//! an operator gives its upstream, its hosts, its API paths, the response
//! headers only it sends, the wire format of its bodies, where its API key
//! and rate-limit headroom travel. Everything provider-specific outside the
//! body parsers (`llm`, `bedrock`, `cohere`, `ollama`) is read from here.
//!
//! Adding a provider: a `Provider` variant, one `ProviderEntry` in
//! `PROVIDERS`, and, when its bodies are in a new shape, a `WireFormat` with
//! its parser.

/// Who serves a request (`gen_ai.provider.name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    OpenAi,
    AzureOpenAi,
    Anthropic,
    Gemini,
    VertexAi,
    Bedrock,
    Mistral,
    Cohere,
    DeepSeek,
    Ollama,
    Groq,
    OpenRouter,
    Together,
    Fireworks,
    XAi,
    Perplexity,
    Vllm,
    LiteLlm,
    Unknown,
}

/// The shape of a provider's request and response bodies: each has one
/// usage parser and one stream interpretation (`llm::StreamInterpreter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireFormat {
    /// OpenAI Chat Completions, Responses, embeddings (and every
    /// OpenAI-compatible server: DeepSeek's cache-hit fields included).
    OpenAi,
    /// Anthropic Messages (also on Vertex AI's rawPredict).
    Anthropic,
    /// Gemini generateContent (AI Studio and Vertex AI).
    Gemini,
    /// Bedrock Runtime Converse / ConverseStream.
    BedrockConverse,
    /// Bedrock Runtime InvokeModel / InvokeModelWithResponseStream: the
    /// model's native body (Anthropic's read), usage also in headers.
    BedrockInvoke,
    /// Cohere v2 chat.
    Cohere,
    /// Ollama's native `/api/chat` and `/api/generate`.
    Ollama,
    Unknown,
}

/// `gen_ai.operation.name` and which API it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// OpenAI Chat Completions (and compatible).
    ChatCompletions,
    /// OpenAI Responses.
    Responses,
    /// Anthropic Messages (and Vertex AI rawPredict).
    Messages,
    Embeddings,
    /// Gemini generateContent / streamGenerateContent.
    GenerateContent,
    /// Bedrock Converse / ConverseStream.
    Converse,
    /// Bedrock InvokeModel / InvokeModelWithResponseStream.
    InvokeModel,
    /// Cohere v2 chat, Ollama `/api/chat`.
    Chat,
    /// Ollama `/api/generate`.
    TextCompletion,
    Other,
}

impl Operation {
    /// `gen_ai.operation.name`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ChatCompletions | Self::Messages | Self::Converse | Self::InvokeModel | Self::Chat => "chat",
            Self::Responses => "responses",
            Self::Embeddings => "embeddings",
            Self::GenerateContent => "generate_content",
            Self::TextCompletion => "text_completion",
            Self::Other => "other",
        }
    }
}

/// Where a request names its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelIn {
    /// The body's `model` field.
    Body,
    /// The last path segment up to its `:` (`.../models/gemini-2.0-flash:generateContent`),
    /// else the body's `model`.
    LastSegment,
    /// The segment after `/model/` (Bedrock), percent-decoded.
    AfterModel,
}

/// One API path of a provider: it matches when the path (query removed)
/// contains `contains` and ends with `ends_with`.
#[derive(Debug, Clone, Copy)]
pub struct PathShape {
    pub contains: &'static str,
    pub ends_with: &'static str,
    pub operation: Operation,
    pub format: WireFormat,
    pub model: ModelIn,
    /// The path itself asks for a stream (`:streamGenerateContent`, `/converse-stream`).
    pub streams: bool,
    /// The API streams unless the body says `"stream": false` (Ollama).
    pub streams_by_default: bool,
}

const fn path(contains: &'static str, ends_with: &'static str, operation: Operation, format: WireFormat) -> PathShape {
    PathShape {
        contains,
        ends_with,
        operation,
        format,
        model: ModelIn::Body,
        streams: false,
        streams_by_default: false,
    }
}

const fn in_path(mut shape: PathShape, model: ModelIn, streams: bool) -> PathShape {
    shape.model = model;
    shape.streams = streams;
    shape
}

/// Where a request carries its API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyHeader {
    /// `Authorization: Bearer KEY`.
    Bearer,
    /// The whole value of this header (`x-api-key`, `api-key`).
    Plain(&'static str),
    /// AWS Signature V4: the access key id in `Authorization`'s `Credential=`.
    SigV4,
}

/// Response headers carrying token counts (Bedrock's InvokeModel).
#[derive(Debug, Clone, Copy)]
pub struct UsageHeaders {
    /// Input tokens, excluding the cache buckets (added to it).
    pub input: &'static str,
    pub output: &'static str,
    pub cache_read: &'static str,
    pub cache_write: &'static str,
}

/// Everything the agent knows about one provider.
#[derive(Debug)]
pub struct ProviderEntry {
    pub provider: Provider,
    /// `gen_ai.provider.name` (the OpenTelemetry well-known value when there is one).
    pub name: &'static str,
    /// Words in a configured upstream name (`--provider NAME=...`) meaning this provider.
    pub aliases: &'static [&'static str],
    /// Text in the request's Host header meaning this provider.
    pub hosts: &'static [&'static str],
    /// Its own API paths, most specific first.
    pub paths: &'static [PathShape],
    /// Response header name prefixes only this provider sends.
    pub response_header_prefixes: &'static [&'static str],
    /// The format of its bodies on a path of no known shape.
    pub format: WireFormat,
    pub key_headers: &'static [KeyHeader],
    /// Response header name prefixes reporting rate-limit headroom.
    pub rate_limit_headers: &'static [&'static str],
    /// A response header naming the error (`x-amzn-errortype: ThrottlingException:...`).
    pub error_header: Option<&'static str>,
    pub usage_headers: Option<UsageHeaders>,
}

use {Operation as Op, WireFormat as W};

const BEARER: &[KeyHeader] = &[KeyHeader::Bearer];
const OPENAI_LIMITS: &[&str] = &["x-ratelimit-"];

/// An OpenAI-compatible server: OpenAI's paths and bodies, its own name.
const fn compatible(
    provider: Provider,
    name: &'static str,
    aliases: &'static [&'static str],
    hosts: &'static [&'static str],
) -> ProviderEntry {
    ProviderEntry {
        provider,
        name,
        aliases,
        hosts,
        paths: &[],
        response_header_prefixes: &[],
        format: W::OpenAi,
        key_headers: BEARER,
        rate_limit_headers: OPENAI_LIMITS,
        error_header: None,
        usage_headers: None,
    }
}

/// The table, in matching order: entries whose paths or names are more
/// specific (Azure's `/openai/deployments/`, Vertex AI's `publishers/`)
/// come before the ones they would otherwise be taken for.
pub static PROVIDERS: &[ProviderEntry] = &[
    ProviderEntry {
        provider: Provider::AzureOpenAi,
        name: "azure.ai.openai",
        aliases: &["azure"],
        hosts: &[".openai.azure.com", ".cognitiveservices.azure.com"],
        paths: &[
            path("/openai/deployments/", "/chat/completions", Op::ChatCompletions, W::OpenAi),
            path("/openai/deployments/", "/embeddings", Op::Embeddings, W::OpenAi),
            path("/openai/deployments/", "/completions", Op::TextCompletion, W::OpenAi),
        ],
        response_header_prefixes: &["apim-request-id", "x-ms-region", "azureml-model-session"],
        format: W::OpenAi,
        key_headers: &[KeyHeader::Plain("api-key"), KeyHeader::Bearer],
        rate_limit_headers: OPENAI_LIMITS,
        error_header: None,
        usage_headers: None,
    },
    ProviderEntry {
        provider: Provider::VertexAi,
        name: "gcp.vertex_ai",
        aliases: &["vertex"],
        hosts: &["aiplatform.googleapis.com"],
        paths: &[
            in_path(
                path("/publishers/google/models/", ":streamGenerateContent", Op::GenerateContent, W::Gemini),
                ModelIn::LastSegment,
                true,
            ),
            in_path(
                path("/publishers/google/models/", ":generateContent", Op::GenerateContent, W::Gemini),
                ModelIn::LastSegment,
                false,
            ),
            in_path(
                path("/publishers/anthropic/models/", ":streamRawPredict", Op::Messages, W::Anthropic),
                ModelIn::LastSegment,
                true,
            ),
            in_path(
                path("/publishers/anthropic/models/", ":rawPredict", Op::Messages, W::Anthropic),
                ModelIn::LastSegment,
                false,
            ),
        ],
        response_header_prefixes: &[],
        format: W::Gemini,
        key_headers: BEARER,
        rate_limit_headers: &[],
        error_header: None,
        usage_headers: None,
    },
    ProviderEntry {
        provider: Provider::Bedrock,
        name: "aws.bedrock",
        aliases: &["bedrock", "aws"],
        hosts: &["bedrock-runtime."],
        paths: &[
            in_path(path("/model/", "/converse-stream", Op::Converse, W::BedrockConverse), ModelIn::AfterModel, true),
            in_path(path("/model/", "/converse", Op::Converse, W::BedrockConverse), ModelIn::AfterModel, false),
            in_path(
                path("/model/", "/invoke-with-response-stream", Op::InvokeModel, W::BedrockInvoke),
                ModelIn::AfterModel,
                true,
            ),
            in_path(path("/model/", "/invoke", Op::InvokeModel, W::BedrockInvoke), ModelIn::AfterModel, false),
        ],
        response_header_prefixes: &["x-amzn-bedrock-"],
        format: W::BedrockConverse,
        key_headers: &[KeyHeader::SigV4, KeyHeader::Bearer],
        rate_limit_headers: &[],
        error_header: Some("x-amzn-errortype"),
        usage_headers: Some(UsageHeaders {
            input: "x-amzn-bedrock-input-token-count",
            output: "x-amzn-bedrock-output-token-count",
            cache_read: "x-amzn-bedrock-cache-read-input-token-count",
            cache_write: "x-amzn-bedrock-cache-write-input-token-count",
        }),
    },
    ProviderEntry {
        provider: Provider::OpenAi,
        name: "openai",
        aliases: &["openai"],
        hosts: &["api.openai.com"],
        paths: &[
            path("", "/chat/completions", Op::ChatCompletions, W::OpenAi),
            path("", "/responses", Op::Responses, W::OpenAi),
            path("", "/embeddings", Op::Embeddings, W::OpenAi),
        ],
        response_header_prefixes: &["openai-"],
        format: W::OpenAi,
        key_headers: BEARER,
        rate_limit_headers: OPENAI_LIMITS,
        error_header: None,
        usage_headers: None,
    },
    ProviderEntry {
        provider: Provider::Anthropic,
        name: "anthropic",
        aliases: &["anthropic", "claude"],
        hosts: &["api.anthropic.com"],
        paths: &[path("", "/messages", Op::Messages, W::Anthropic)],
        response_header_prefixes: &["anthropic-"],
        format: W::Anthropic,
        key_headers: &[KeyHeader::Plain("x-api-key"), KeyHeader::Bearer],
        rate_limit_headers: &["anthropic-ratelimit-"],
        error_header: None,
        usage_headers: None,
    },
    ProviderEntry {
        provider: Provider::Gemini,
        name: "gcp.gemini",
        aliases: &["gemini", "google"],
        hosts: &["generativelanguage.googleapis.com", "googleapis.com"],
        paths: &[
            in_path(path("", ":streamGenerateContent", Op::GenerateContent, W::Gemini), ModelIn::LastSegment, true),
            in_path(path("", ":generateContent", Op::GenerateContent, W::Gemini), ModelIn::LastSegment, false),
            in_path(path("", ":embedContent", Op::Embeddings, W::Gemini), ModelIn::LastSegment, false),
        ],
        response_header_prefixes: &["x-goog-"],
        format: W::Gemini,
        key_headers: &[KeyHeader::Plain("x-goog-api-key"), KeyHeader::Bearer],
        rate_limit_headers: &[],
        error_header: None,
        usage_headers: None,
    },
    ProviderEntry {
        provider: Provider::Cohere,
        name: "cohere",
        aliases: &["cohere"],
        hosts: &["api.cohere.com", "api.cohere.ai"],
        paths: &[path("", "/v2/chat", Op::Chat, W::Cohere)],
        response_header_prefixes: &[],
        format: W::Cohere,
        key_headers: BEARER,
        rate_limit_headers: &["x-endpoint-monthly-call-", "x-trial-endpoint-call-"],
        error_header: None,
        usage_headers: None,
    },
    ProviderEntry {
        provider: Provider::Ollama,
        name: "ollama",
        aliases: &["ollama"],
        hosts: &[":11434"],
        paths: &[
            PathShape { streams_by_default: true, ..path("", "/api/chat", Op::Chat, W::Ollama) },
            PathShape { streams_by_default: true, ..path("", "/api/generate", Op::TextCompletion, W::Ollama) },
        ],
        response_header_prefixes: &[],
        format: W::Ollama,
        key_headers: BEARER,
        rate_limit_headers: &[],
        error_header: None,
        usage_headers: None,
    },
    ProviderEntry {
        response_header_prefixes: &["mistral-correlation-id"],
        ..compatible(Provider::Mistral, "mistral_ai", &["mistral"], &["api.mistral.ai"])
    },
    compatible(Provider::DeepSeek, "deepseek", &["deepseek"], &["api.deepseek.com"]),
    ProviderEntry {
        response_header_prefixes: &["x-groq-"],
        ..compatible(Provider::Groq, "groq", &["groq"], &["api.groq.com"])
    },
    compatible(Provider::OpenRouter, "openrouter", &["openrouter"], &["openrouter.ai"]),
    compatible(Provider::Together, "together_ai", &["together"], &["api.together.xyz", "api.together.ai"]),
    compatible(Provider::Fireworks, "fireworks_ai", &["fireworks"], &["api.fireworks.ai"]),
    compatible(Provider::XAi, "x_ai", &["xai", "grok"], &["api.x.ai"]),
    compatible(Provider::Perplexity, "perplexity", &["perplexity"], &["api.perplexity.ai"]),
    compatible(Provider::Vllm, "vllm", &["vllm"], &[]),
    compatible(Provider::LiteLlm, "litellm", &["litellm"], &[]),
];

/// The entry of a request no entry claims.
static UNKNOWN: ProviderEntry = ProviderEntry {
    provider: Provider::Unknown,
    name: "unknown",
    aliases: &[],
    hosts: &[],
    paths: &[],
    response_header_prefixes: &[],
    format: W::Unknown,
    key_headers: &[],
    rate_limit_headers: &[],
    error_header: None,
    usage_headers: None,
};

/// Headers any provider may send about rate limits.
const COMMON_RATE_LIMIT_HEADERS: [&str; 2] = ["retry-after", "retry-after-ms"];

impl Provider {
    pub fn entry(self) -> &'static ProviderEntry {
        PROVIDERS.iter().find(|e| e.provider == self).unwrap_or(&UNKNOWN)
    }

    /// `gen_ai.provider.name`.
    pub fn name(self) -> &'static str {
        self.entry().name
    }

    /// The provider a configured upstream name stands for (`--provider
    /// openai=...`), if it names one this agent knows.
    pub fn from_configured_name(name: &str) -> Option<Self> {
        let n = name.to_ascii_lowercase();
        PROVIDERS.iter().find(|e| e.aliases.iter().any(|a| n.contains(a))).map(|e| e.provider)
    }

    /// The provider a Host header names (lower-cased), if any.
    pub fn from_host(host: &str) -> Option<Self> {
        PROVIDERS.iter().find(|e| e.hosts.iter().any(|h| host.contains(h))).map(|e| e.provider)
    }

    /// The provider whose servers send these (lower-case) response headers.
    pub fn from_response_headers<'a>(mut names: impl Iterator<Item = &'a str>) -> Self {
        names
            .find_map(|h| {
                PROVIDERS
                    .iter()
                    .find(|e| e.response_header_prefixes.iter().any(|p| h.starts_with(p)))
                    .map(|e| e.provider)
            })
            .unwrap_or(Self::Unknown)
    }
}

/// The provider and path shape a request path (query removed) has.
pub fn shape_of(path: &str) -> Option<(Provider, &'static PathShape)> {
    PROVIDERS.iter().find_map(|e| {
        e.paths.iter().find(|s| path.contains(s.contains) && path.ends_with(s.ends_with)).map(|s| (e.provider, s))
    })
}

/// Whether a (lower-case) response header reports rate-limit headroom for
/// some provider.
pub fn is_rate_limit_header(name: &str) -> bool {
    COMMON_RATE_LIMIT_HEADERS.contains(&name)
        || PROVIDERS.iter().any(|e| e.rate_limit_headers.iter().any(|p| name.starts_with(p)))
}

/// Every way the table's providers carry an API key, each once, in table order.
pub fn key_headers() -> impl Iterator<Item = KeyHeader> {
    let mut seen = Vec::new();
    PROVIDERS.iter().flat_map(|e| e.key_headers.iter().copied()).filter(move |k| {
        let new = !seen.contains(k);
        if new {
            seen.push(*k);
        }
        new
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_has_one_entry_and_a_distinct_name() {
        for (i, e) in PROVIDERS.iter().enumerate() {
            assert_eq!(e.provider.entry().name, e.name, "{:?}", e.provider);
            assert!(PROVIDERS[..i].iter().all(|o| o.provider != e.provider && o.name != e.name), "{:?}", e.provider);
        }
        assert_eq!(Provider::Unknown.name(), "unknown");
    }

    #[test]
    fn specific_shapes_win_over_the_general_ones() {
        let p = |path: &str| shape_of(path).map(|(p, s)| (p, s.operation, s.format));
        assert_eq!(
            p("/openai/deployments/gpt4o-prod/chat/completions"),
            Some((Provider::AzureOpenAi, Op::ChatCompletions, W::OpenAi))
        );
        assert_eq!(p("/v1/chat/completions"), Some((Provider::OpenAi, Op::ChatCompletions, W::OpenAi)));
        assert_eq!(
            p(
                "/v1/projects/p/locations/us-central1/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict"
            ),
            Some((Provider::VertexAi, Op::Messages, W::Anthropic))
        );
        assert_eq!(
            p("/v1/projects/p/locations/l/publishers/google/models/gemini-2.5-pro:generateContent"),
            Some((Provider::VertexAi, Op::GenerateContent, W::Gemini))
        );
        assert_eq!(p("/v1beta/models/gemini-2.5-pro:generateContent").map(|x| x.0), Some(Provider::Gemini));
        assert_eq!(
            p("/model/anthropic.claude-3-haiku-20240307-v1:0/converse-stream"),
            Some((Provider::Bedrock, Op::Converse, W::BedrockConverse))
        );
        assert_eq!(p("/model/m/invoke").map(|x| x.2), Some(W::BedrockInvoke));
        assert_eq!(p("/api/chat").map(|x| x.0), Some(Provider::Ollama));
        assert_eq!(p("/v2/chat").map(|x| x.0), Some(Provider::Cohere));
        assert_eq!(p("/v1/models"), None);
    }

    #[test]
    fn names_hosts_and_headers() {
        assert_eq!(Provider::from_configured_name("azure-openai-east"), Some(Provider::AzureOpenAi));
        assert_eq!(Provider::from_configured_name("Claude"), Some(Provider::Anthropic));
        assert_eq!(Provider::from_configured_name("groq"), Some(Provider::Groq));
        assert_eq!(Provider::from_configured_name("internal"), None);
        assert_eq!(Provider::from_host("bedrock-runtime.us-east-1.amazonaws.com"), Some(Provider::Bedrock));
        assert_eq!(Provider::from_host("us-central1-aiplatform.googleapis.com"), Some(Provider::VertexAi));
        assert_eq!(Provider::from_host("generativelanguage.googleapis.com"), Some(Provider::Gemini));
        assert_eq!(Provider::from_host("myres.openai.azure.com"), Some(Provider::AzureOpenAi));
        assert_eq!(Provider::from_host("api.deepseek.com"), Some(Provider::DeepSeek));
        assert_eq!(Provider::from_host("localhost:11434"), Some(Provider::Ollama));
        assert_eq!(Provider::from_response_headers(["server", "x-groq-region"].into_iter()), Provider::Groq);
        assert!(is_rate_limit_header("anthropic-ratelimit-tokens-remaining") && is_rate_limit_header("retry-after"));
        assert!(!is_rate_limit_header("x-request-id"));
        let keys: Vec<_> = key_headers().collect();
        assert!(keys.contains(&KeyHeader::Plain("x-api-key")) && keys.contains(&KeyHeader::SigV4));
        assert_eq!(keys.iter().filter(|k| **k == KeyHeader::Bearer).count(), 1);
    }
}
