//! Canary strategies: steps written in TOML, compiled to the Amazon States Language definition
//! both engines run (`cutover strategy render`). The shipped `pipelines/canary.asl.json` is the
//! rendering of `pipelines/canary.strategy.toml`.
//!
//! ```toml
//! [strategy]
//! steps = [
//!   { set_weight = 10 }, { pause = "60s" }, { analysis = "health-check" },
//!   { set_weight = 50 }, { pause = "60s" }, { analysis = "health-check" },
//!   { set_weight = 100 }, { pause = "60s" }, { analysis = "health-check" },
//! ]
//! # or a preset instead of steps:
//! # canary = { percent = 10, bake = "10m" }     # 10% → bake → check → 100% → bake → check
//! # linear = { step = 20, interval = "2m" }     # 20, 40, 60, 80, 100%, each baked and checked
//!
//! [strategy.resources]          # the Task resources the states call (defaults shown)
//! shift = "arn:aws:lambda:us-east-1:111122223333:function:cutover-traffic-shift"
//! analyses = { health-check = "arn:aws:lambda:us-east-1:111122223333:function:cutover-health-check" }
//! ```
//!
//! `background = { analysis = ["error-rate"], every = "1m" }` also runs analyses throughout
//! every wait, every `every` of wait time, rolling back as soon as one finds green unhealthy.
//!
//! `pause = "until-promoted"` waits until an operator promotes (`cutover rollouts promote`). The
//! compiled machine has the control points of every shipped canary: each pause (and a gate
//! before each shift, and one at the end) reads the rollout's control record between ticks, so
//! it can be aborted, paused, resumed and promoted; any failed analysis or step rolls back.

use std::collections::BTreeMap;
use std::time::Duration;

use cutover_core::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::rollouts::CONTROL_RESOURCE;

/// A strategy file's `[strategy]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Strategy {
    /// The steps, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    /// A preset instead of steps: one canary step, then all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryPreset>,
    /// A preset instead of steps: equal steps up to 100%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear: Option<LinearPreset>,
    /// Analyses that also run in the background, throughout every counted wait (Argo
    /// Rollouts' background analysis): a failure rolls back at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<Background>,
    /// The Task resources the states call.
    #[serde(default)]
    pub resources: Resources,
}

/// `background = { analysis = ["error-rate"], every = "1m" }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Background {
    /// Names of `resources.analyses` run in the background, in order; all must be healthy.
    pub analysis: OneOrMany,
    /// How often they run, counted in wait time (a paused wait does not count; its own
    /// `health_every` check goes on).
    #[serde(with = "cutover_core::duration")]
    pub every: Duration,
}

/// `canary = { percent, bake }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryPreset {
    /// Green's share of the one canary step.
    pub percent: u8,
    /// How long each weight bakes before its check.
    #[serde(with = "cutover_core::duration")]
    pub bake: Duration,
}

/// `linear = { step, interval }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearPreset {
    /// How much green's share grows each step.
    pub step: u8,
    /// How long each weight bakes before its check.
    #[serde(with = "cutover_core::duration")]
    pub interval: Duration,
}

/// The Task resources of the compiled machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// What sets the weights (input `{weight, execution}`, output `{blue, green}`).
    #[serde(default = "default_shift")]
    pub shift: String,
    /// What each named analysis calls (output `{State: "healthy" | …, reason}`).
    #[serde(default = "default_analyses")]
    pub analyses: BTreeMap<String, String>,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            shift: default_shift(),
            analyses: default_analyses(),
        }
    }
}

fn default_shift() -> String {
    "arn:aws:lambda:us-east-1:111122223333:function:cutover-traffic-shift".into()
}
fn default_analyses() -> BTreeMap<String, String> {
    BTreeMap::from([(
        "health-check".to_owned(),
        "arn:aws:lambda:us-east-1:111122223333:function:cutover-health-check".to_owned(),
    )])
}

/// One step.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Step {
    /// `{ set_weight = 10 }`: green's share, verified.
    SetWeight {
        /// 1–100.
        set_weight: u8,
    },
    /// `{ pause = "5m" }` or `{ pause = "until-promoted" }`.
    Pause {
        /// A duration, or `until-promoted`.
        pause: String,
    },
    /// `{ analysis = "health-check" }` or a list: each must find green healthy.
    Analysis {
        /// Names of `resources.analyses`.
        analysis: OneOrMany,
    },
}

/// One name or a list of them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    fn names(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(n) => vec![n.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// A pause that only a promote ends: ten years.
const UNTIL_PROMOTED: u64 = 315_360_000;

const TASK_RETRIES: [&str; 7] = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Throttling",
    "TrafficShift.NotInSync",
    "Cutover.Retryable",
];

impl Strategy {
    /// The steps, presets expanded.
    pub fn expanded(&self) -> Result<Vec<Step>, FieldError> {
        let presets = usize::from(self.canary.is_some()) + usize::from(self.linear.is_some());
        if presets + usize::from(!self.steps.is_empty()) != 1 {
            return Err(FieldError::new(
                "strategy",
                "give exactly one of `steps`, `canary` or `linear`",
            ));
        }
        let bake_and_check = |weight: u8, bake: Duration| {
            vec![
                Step::SetWeight { set_weight: weight },
                Step::Pause {
                    pause: format!("{}s", bake.as_secs()),
                },
                Step::Analysis {
                    analysis: OneOrMany::One(self.first_analysis().to_owned()),
                },
            ]
        };
        if let Some(c) = &self.canary {
            if !(1..100).contains(&c.percent) {
                return Err(FieldError::new("strategy.canary.percent", "must be 1–99"));
            }
            return Ok([c.percent, 100]
                .into_iter()
                .flat_map(|w| bake_and_check(w, c.bake))
                .collect());
        }
        if let Some(l) = &self.linear {
            if !(1..=100).contains(&l.step) {
                return Err(FieldError::new("strategy.linear.step", "must be 1–100"));
            }
            let mut weights: Vec<u8> = (1..).map(|i| i * l.step).take_while(|w| *w < 100).collect();
            weights.push(100);
            return Ok(weights
                .into_iter()
                .flat_map(|w| bake_and_check(w, l.interval))
                .collect());
        }
        Ok(self.steps.clone())
    }

    /// The analysis the presets use, that checks green while paused and that the observed-split
    /// gate asks: `health-check` when the strategy has one, else the first by name.
    fn first_analysis(&self) -> &str {
        if self.resources.analyses.contains_key("health-check") {
            return "health-check";
        }
        self.resources
            .analyses
            .keys()
            .next()
            .map_or("health-check", String::as_str)
    }

    /// Compiles the strategy to a States Language definition.
    pub fn compile(&self) -> Result<Value, FieldError> {
        Compiler::new(self)?.compile()
    }
}

/// The States Language text of a definition file: the file itself, or — for a strategy file
/// (`*.toml` with a `[strategy]` table) — what it compiles to. Every reader of
/// `engine.definition` goes through here, so a pipeline may name either.
pub fn definition_text(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    states_language(path, text)
}

/// [`definition_text`] of the file `path` whose text is `text`. A strategy file is compiled
/// once for the same text: loading a pipeline file validates, builds and asks whether the
/// machine reads its control record, each reading the definition.
pub(super) fn states_language(path: &std::path::Path, text: String) -> Result<String, String> {
    static COMPILED: TextCache<String> = TextCache::new();
    if path.extension().is_none_or(|e| e != "toml") {
        return Ok(text);
    }
    COMPILED.derive(path, text, |text| compile_strategy_text(path, text))
}

/// What is derived from files' texts, each file's kept while its text stays the same (a
/// changed file is derived anew; a failure is not kept).
pub(super) struct TextCache<T>(
    std::sync::Mutex<Option<std::collections::HashMap<std::path::PathBuf, (String, T)>>>,
);

impl<T: Clone> TextCache<T> {
    pub(super) const fn new() -> Self {
        Self(std::sync::Mutex::new(None))
    }

    /// What `derive` makes of `text`, the text of `path` now.
    pub(super) fn derive(
        &self,
        path: &std::path::Path,
        text: String,
        derive: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, String> {
        if let Ok(known) = self.0.lock()
            && let Some((seen, value)) = known.as_ref().and_then(|k| k.get(path))
            && *seen == text
        {
            return Ok(value.clone());
        }
        let value = derive(&text)?;
        if let Ok(mut known) = self.0.lock() {
            known
                .get_or_insert_default()
                .insert(path.to_owned(), (text, value.clone()));
        }
        Ok(value)
    }
}

/// What the strategy file `path` holding `text` compiles to.
fn compile_strategy_text(path: &std::path::Path, text: &str) -> Result<String, String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| format!("{}: {e}", path.display()))?;
    let strategy = table.remove("strategy").ok_or_else(|| {
        format!(
            "{}: a .toml definition must be a strategy file with a [strategy] table",
            path.display()
        )
    })?;
    let strategy: Strategy = strategy
        .try_into()
        .map_err(|e| format!("{}: [strategy]: {e}", path.display()))?;
    let definition = strategy
        .compile()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(definition.to_string())
}

/// What a pause waits for.
fn pause_seconds(text: &str) -> Result<u64, FieldError> {
    if text == "until-promoted" {
        return Ok(UNTIL_PROMOTED);
    }
    cutover_core::duration::parse(text)
        .map(|d| d.as_secs())
        .map_err(|e| {
            FieldError::new(
                "strategy.steps",
                format!("pause {text:?}: {e} (or \"until-promoted\")"),
            )
        })
}

/// Every name of `analysis` must be one of `resources.analyses`.
fn known_analyses(strategy: &Strategy, analysis: &OneOrMany, field: &str) -> Result<(), FieldError> {
    for name in analysis.names() {
        if !strategy.resources.analyses.contains_key(name) {
            let known: Vec<&str> = strategy.resources.analyses.keys().map(String::as_str).collect();
            return Err(FieldError::new(
                field,
                format!(
                    "analysis {name:?} is not in strategy.resources.analyses (it has: {})",
                    known.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

struct Compiler<'a> {
    strategy: &'a Strategy,
    steps: Vec<Step>,
    states: Map<String, Value>,
    /// Each wait's name and the state after it, for `WindowOver`.
    windows: Vec<(String, String)>,
}

fn catch() -> Value {
    json!([{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Rollback"}])
}

fn retry() -> Value {
    json!([{"ErrorEquals": TASK_RETRIES, "IntervalSeconds": 2, "MaxAttempts": 3, "BackoffRate": 2.0}])
}

fn action(a: &str) -> Value {
    json!([
        {"Variable": "$.op.Item.action.S", "IsPresent": true},
        {"Variable": "$.op.Item.action.S", "StringEquals": a}
    ])
}

impl<'a> Compiler<'a> {
    fn new(strategy: &'a Strategy) -> Result<Self, FieldError> {
        let steps = strategy.expanded()?;
        let mut last = 0;
        for step in &steps {
            match step {
                Step::SetWeight { set_weight } if *set_weight == 0 || *set_weight > 100 => {
                    return Err(FieldError::new("strategy.steps", "set_weight must be 1–100"));
                }
                Step::SetWeight { set_weight } if *set_weight <= last => {
                    return Err(FieldError::new(
                        "strategy.steps",
                        format!("set_weight {set_weight} after {last}: weights must grow"),
                    ));
                }
                Step::SetWeight { set_weight } => last = *set_weight,
                Step::Pause { pause } => {
                    pause_seconds(pause)?;
                }
                Step::Analysis { analysis } => known_analyses(strategy, analysis, "strategy.steps")?,
            }
        }
        if let Some(background) = &strategy.background {
            known_analyses(strategy, &background.analysis, "strategy.background.analysis")?;
            if background.every.as_secs() == 0 {
                return Err(FieldError::new(
                    "strategy.background.every",
                    "must be at least 1s (e.g. \"1m\")",
                ));
            }
        }
        if !matches!(steps.first(), Some(Step::SetWeight { .. })) {
            return Err(FieldError::new("strategy.steps", "start with a set_weight step"));
        }
        if last != 100 {
            return Err(FieldError::new(
                "strategy.steps",
                format!("the last weight is {last}: end at set_weight = 100"),
            ));
        }
        Ok(Self {
            strategy,
            steps,
            states: Map::new(),
            windows: Vec::new(),
        })
    }

    fn add(&mut self, name: &str, state: Value) {
        self.states.insert(name.to_owned(), state);
    }

    fn shift(&self, weight: u8, next: &str, comment: &str) -> Value {
        json!({
            "Type": "Task", "Comment": comment, "Resource": self.strategy.resources.shift,
            "Parameters": {"weight": weight, "execution.$": "$$.Execution.Name", "control.$": "$.control"},
            "ResultPath": "$.traffic", "Retry": retry(), "Catch": catch(), "Next": next,
        })
    }

    fn check(&self, analysis: &str, next: &str, comment: &str) -> Value {
        json!({
            "Type": "Task", "Comment": comment, "Resource": self.strategy.resources.analyses[analysis],
            "Parameters": {"weight.$": "$.traffic.green", "execution.$": "$$.Execution.Name", "control.$": "$.control"},
            "ResultPath": "$.health", "Retry": retry(), "Catch": catch(), "Next": next,
        })
    }

    /// The observed-split gate after a shift, when the execution's `control.observe` is true
    /// (the starter's `control.observe_split`): the analysis resource, asked for its
    /// `observed-split` probe, must find green receiving the weight just set before the bake
    /// starts; otherwise roll back.
    fn observe_gate(&mut self, weight: u8, next: &str) {
        let (gate, task, verdict) = (
            format!("Observe{weight}"),
            format!("ObserveSplit{weight}"),
            format!("Observed{weight}"),
        );
        self.add(&gate, json!({
            "Type": "Choice",
            "Comment": "Check the split actually observed only where the pipeline asks for it (control.observe)",
            "Choices": [{"And": [
                {"Variable": "$.control.observe", "IsPresent": true},
                {"Variable": "$.control.observe", "BooleanEquals": true}
            ], "Next": task}],
            "Default": next,
        }));
        self.add(&task, json!({
            "Type": "Task",
            "Comment": format!("Does green actually receive {weight}% of the traffic (probe observed-split)?"),
            "Resource": self.first_analysis_resource(),
            "Parameters": {"weight.$": "$.traffic.green", "execution.$": "$$.Execution.Name", "control.$": "$.control", "probe": "observed-split"},
            "ResultPath": "$.observed", "Retry": retry(), "Catch": catch(), "Next": verdict,
        }));
        self.add(
            &verdict,
            json!({
                "Type": "Choice",
                "Choices": [{"Variable": "$.observed.State", "StringEquals": "healthy", "Next": next}],
                "Default": "Rollback",
            }),
        );
    }

    /// A wait: its window, counted down by the shared control loop.
    fn window(&mut self, name: &str, seconds: u64, next: &str, comment: &str) {
        self.add(
            name,
            json!({
                "Type": "Pass", "Comment": comment,
                "Parameters": {"name": name, "seconds": seconds, "elapsed": 0, "held": 0},
                "ResultPath": "$.bake", "Next": "ReadControl",
            }),
        );
        self.windows.push((name.to_owned(), next.to_owned()));
    }

    /// The state names of the steps, in order (`Shift10`, `Bake10`, `Check10`, …).
    fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut weight = 0;
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut unique = |base: String| {
            let n = seen.entry(base.clone()).or_default();
            *n += 1;
            if *n == 1 { base } else { format!("{base}-{n}") }
        };
        for step in &self.steps {
            names.push(match step {
                Step::SetWeight { set_weight } => {
                    weight = *set_weight;
                    unique(format!("Shift{weight}"))
                }
                Step::Pause { .. } => unique(format!("Bake{weight}")),
                Step::Analysis { .. } => unique(format!("Check{weight}")),
            });
        }
        names
    }

    fn compile(mut self) -> Result<Value, FieldError> {
        self.add("Init", json!({
            "Type": "Choice",
            "Comment": "Use the control settings the starter passed (cutover's start-state-machine always does), else AWS defaults",
            "Choices": [{"Variable": "$.control", "IsPresent": true, "Next": "Shift10"}],
            "Default": "DefaultControl",
        }));
        let names = self.names();
        let mut first = names[0].clone();
        if self.strategy.background.is_some() {
            self.add(
                "BackgroundStart",
                json!({
                    "Type": "Pass",
                    "Comment": "Start counting wait time towards the first background analysis",
                    "Result": {"since": 0}, "ResultPath": "$.background", "Next": first,
                }),
            );
            first = "BackgroundStart".to_owned();
        }
        self.states["Init"]["Choices"][0]["Next"] = json!(first);
        self.add("DefaultControl", json!({
            "Type": "Pass",
            "Comment": "Read the control record every 5 s from the table cutover-rollouts; health checks every 30 s while paused",
            "Result": {"table": "cutover-rollouts", "wait": 5, "tick": 5, "health_every": 30},
            "ResultPath": "$.control", "Next": first,
        }));
        let steps = self.steps.clone();
        let mut weight = 0;
        for (i, step) in steps.iter().enumerate() {
            let name = &names[i];
            // What follows this step: the next step (through a gate before a shift), or the end.
            let next = match steps.get(i + 1) {
                Some(Step::SetWeight { set_weight }) => format!("Gate{set_weight}"),
                Some(_) => names[i + 1].clone(),
                None => "Done".to_owned(),
            };
            match step {
                Step::SetWeight { set_weight } => {
                    weight = *set_weight;
                    if i > 0 {
                        let gate = format!("Gate{weight}");
                        let comment = if weight == 100 {
                            "A last look at the control record before the last shift"
                        } else {
                            "A last look at the control record before the next shift"
                        };
                        self.window(&gate, 0, name, comment);
                    }
                    let comment = if weight == 100 {
                        "Send all traffic to green".to_owned()
                    } else {
                        format!("Send {weight}% of traffic to green")
                    };
                    let gate = format!("Observe{weight}");
                    let state = self.shift(weight, &gate, &comment);
                    self.add(name, state);
                    self.observe_gate(weight, &next);
                }
                Step::Pause { pause } => {
                    let seconds = pause_seconds(pause)?;
                    let comment = if seconds == UNTIL_PROMOTED {
                        format!(
                            "Hold green at {weight}% until an operator promotes (cutover rollouts promote)"
                        )
                    } else if i == 1 {
                        format!(
                            "Let green serve {weight}% for {seconds} s before judging it (steerable: see ReadControl)"
                        )
                    } else if weight == 100 {
                        format!("Let green serve 100% for {seconds} s")
                    } else {
                        format!("Let green serve {weight}% for {seconds} s")
                    };
                    self.window(name, seconds, &next, &comment);
                }
                Step::Analysis { analysis } => {
                    let list = analysis.names();
                    // One Task and one verdict per analysis, in order; all must be healthy.
                    for (k, analysis) in list.iter().enumerate() {
                        let check = if k == 0 {
                            name.clone()
                        } else {
                            format!("{name}-{analysis}")
                        };
                        let verdict = if k == 0 {
                            format!("Healthy{}", &name["Check".len()..])
                        } else {
                            format!("Healthy{}-{analysis}", &name["Check".len()..])
                        };
                        let after = match list.get(k + 1) {
                            Some(next_analysis) => format!("{name}-{next_analysis}"),
                            None => next.clone(),
                        };
                        let comment = if list.len() == 1 {
                            format!("Probe green at {weight}%")
                        } else {
                            format!("Analysis {analysis} of green at {weight}%")
                        };
                        let task = self.check(analysis, &verdict, &comment);
                        self.add(&check, task);
                        self.add(&verdict, json!({
                            "Type": "Choice",
                            "Choices": [{"Variable": "$.health.State", "StringEquals": "healthy", "Next": after}],
                            "Default": "Rollback",
                        }));
                    }
                }
            }
        }
        self.window(
            "Done",
            0,
            "Promoted",
            "A last look at the control record: an abort during the last check still rolls back",
        );
        self.add(
            "Promoted",
            json!({"Type": "Succeed", "Comment": "Green serves 100% and is healthy"}),
        );
        self.control_loop();
        Ok(json!({
            "Comment": "cutover canary: shift green to 10%, 50%, 100%, checking health after each step; when green is unhealthy (or a step fails), send all traffic back to blue and fail with the cause. Every wait reads the operator's control record between short ticks (cutover rollouts abort, pause, resume, promote). Runs unchanged on AWS Step Functions (Lambda resources, DynamoDB GetItem) and on cutover's embedded engine (resources mapped in the pipeline file).",
            "StartAt": "Init",
            "States": Value::Object(self.states),
        }))
    }

    /// The states every wait shares: read the control record, act on it, count a tick or hold.
    fn control_loop(&mut self) {
        let first = self.first_analysis_resource();
        self.add("ReadControl", json!({
            "Type": "Task",
            "Comment": "Read the operator's control record (cutover rollouts abort/pause/resume/promote). On AWS a DynamoDB GetItem; on the embedded engine answered from the data directory, waiting up to a tick for a change",
            "Resource": CONTROL_RESOURCE,
            "Parameters": {
                "TableName.$": "$.control.table",
                "Key": {"pk": {"S.$": "States.Format('control#{}', $$.Execution.Name)"}, "sk": {"S": "control"}},
                "ConsistentRead": true
            },
            "ResultPath": "$.op",
            "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 1, "MaxAttempts": 3, "BackoffRate": 2.0}],
            "Catch": catch(), "Next": "Steer",
        }));
        let mut promote = action("promote");
        if let Value::Array(rules) = &mut promote {
            rules.push(json!({"Variable": "$.op.Item.target.S", "IsPresent": true}));
            rules.push(json!({"Variable": "$.op.Item.target.S", "StringEqualsPath": "$.bake.name"}));
        }
        self.add("Steer", json!({
            "Type": "Choice",
            "Comment": "abort → roll back; promote-full → 100%; promote (of this wait) → end it; pause → hold; else count down",
            "Choices": [
                {"And": action("abort"), "Next": "Rollback"},
                {"And": action("promote-full"), "Next": "ShiftFull"},
                {"And": promote, "Next": "WindowOver"},
                {"And": action("pause"), "Next": "Hold"},
                {"Variable": "$.bake.elapsed", "NumericGreaterThanEqualsPath": "$.bake.seconds", "Next": "WindowOver"}
            ],
            "Default": "Tick",
        }));
        self.add(
            "Tick",
            json!({"Type": "Wait", "SecondsPath": "$.control.wait", "Next": "Count"}),
        );
        let counted = if self.strategy.background.is_some() {
            "BackgroundCount"
        } else {
            "ReadControl"
        };
        self.add("Count", json!({
            "Type": "Pass",
            "Parameters": {"name.$": "$.bake.name", "seconds.$": "$.bake.seconds", "elapsed.$": "States.MathAdd($.bake.elapsed, $.control.tick)", "held": 0},
            "ResultPath": "$.bake", "Next": counted,
        }));
        self.background_loop();
        self.add("Hold", json!({"Type": "Wait", "Comment": "Paused: the wait does not count down", "SecondsPath": "$.control.wait", "Next": "HoldCount"}));
        self.add("HoldCount", json!({
            "Type": "Pass",
            "Parameters": {"name.$": "$.bake.name", "seconds.$": "$.bake.seconds", "elapsed.$": "$.bake.elapsed", "held.$": "States.MathAdd($.bake.held, $.control.tick)"},
            "ResultPath": "$.bake", "Next": "HoldDue",
        }));
        self.add("HoldDue", json!({
            "Type": "Choice",
            "Comment": "While paused, green is still checked every health_every seconds",
            "Choices": [{"Variable": "$.bake.held", "NumericGreaterThanEqualsPath": "$.control.health_every", "Next": "HoldCheck"}],
            "Default": "ReadControl",
        }));
        self.add("HoldCheck", json!({
            "Type": "Task", "Comment": "Probe green while paused: a sick green still rolls back", "Resource": first,
            "Parameters": {"weight.$": "$.traffic.green", "execution.$": "$$.Execution.Name", "control.$": "$.control"},
            "ResultPath": "$.health", "Retry": retry(), "Catch": catch(), "Next": "HoldHealthy",
        }));
        self.add(
            "HoldHealthy",
            json!({
                "Type": "Choice",
                "Choices": [{"Variable": "$.health.State", "StringEquals": "healthy", "Next": "HoldReset"}],
                "Default": "Rollback",
            }),
        );
        self.add("HoldReset", json!({
            "Type": "Pass",
            "Parameters": {"name.$": "$.bake.name", "seconds.$": "$.bake.seconds", "elapsed.$": "$.bake.elapsed", "held": 0},
            "ResultPath": "$.bake", "Next": "ReadControl",
        }));
        let choices: Vec<Value> = self
            .windows
            .iter()
            .map(|(w, next)| json!({"Variable": "$.bake.name", "StringEquals": w, "Next": next}))
            .collect();
        self.add("WindowOver", json!({"Type": "Choice", "Comment": "Go on after the wait that ended", "Choices": choices, "Default": "Rollback"}));
        let full = self.shift(
            100,
            "Promoted",
            "Promoted in full by the operator: all traffic to green (verified)",
        );
        self.add("ShiftFull", full);
        self.add("Rollback", json!({
            "Type": "Task", "Comment": "Send all traffic back to blue", "Resource": self.strategy.resources.shift,
            "Parameters": {"weight": 0, "execution.$": "$$.Execution.Name", "control.$": "$.control"}, "ResultPath": "$.rollback",
            "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 2, "MaxAttempts": 5, "BackoffRate": 2.0}],
            "Next": "WhyRolledBack",
        }));
        self.add(
            "WhyRolledBack",
            json!({
                "Type": "Choice",
                "Choices": [
                    {"And": action("abort"), "Next": "Aborted"},
                    {"Variable": "$.error", "IsPresent": true, "Next": "FailedStep"},
                    {"And": [
                        {"Variable": "$.observed.State", "IsPresent": true},
                        {"Variable": "$.observed.State", "StringEquals": "unhealthy"}
                    ], "Next": "SplitNotObserved"}
                ],
                "Default": "Unhealthy",
            }),
        );
        self.add(
            "SplitNotObserved",
            json!({"Type": "Fail", "Comment": "Green did not receive the weight set", "Error": "Canary.SplitNotObserved", "CausePath": "$.observed.reason"}),
        );
        self.add("Aborted", json!({"Type": "Fail", "Comment": "Aborted by the operator (the reason is the cause)", "Error": "Canary.Aborted", "CausePath": "$.op.Item.reason.S"}));
        self.add(
            "Unhealthy",
            json!({"Type": "Fail", "Error": "Canary.Unhealthy", "CausePath": "$.health.reason"}),
        );
        self.add(
            "FailedStep",
            json!({"Type": "Fail", "Error": "Canary.StepFailed", "CausePath": "$.error.Cause"}),
        );
    }

    /// With `background`: every `every` seconds of counted wait, its analyses run; an
    /// unhealthy one rolls back.
    fn background_loop(&mut self) {
        let Some(background) = self.strategy.background.clone() else {
            return;
        };
        let names = background.analysis.names();
        let every = background.every.as_secs();
        self.add(
            "BackgroundCount",
            json!({
                "Type": "Pass",
                "Parameters": {"since.$": "States.MathAdd($.background.since, $.control.tick)"},
                "ResultPath": "$.background", "Next": "BackgroundDue",
            }),
        );
        self.add("BackgroundDue", json!({
            "Type": "Choice",
            "Comment": format!("The background analyses run every {every} s of wait time"),
            "Choices": [{"Variable": "$.background.since", "NumericGreaterThanEquals": every, "Next": format!("Background-{}", names[0])}],
            "Default": "ReadControl",
        }));
        for (k, analysis) in names.iter().enumerate() {
            let after = names
                .get(k + 1)
                .map_or_else(|| "BackgroundReset".to_owned(), |n| format!("Background-{n}"));
            let verdict = format!("BackgroundHealthy-{analysis}");
            let task = self.check(
                analysis,
                &verdict,
                &format!("Background analysis {analysis} of green during the wait"),
            );
            self.add(&format!("Background-{analysis}"), task);
            self.add(
                &verdict,
                json!({
                    "Type": "Choice",
                    "Choices": [{"Variable": "$.health.State", "StringEquals": "healthy", "Next": after}],
                    "Default": "Rollback",
                }),
            );
        }
        self.add(
            "BackgroundReset",
            json!({
                "Type": "Pass", "Result": {"since": 0}, "ResultPath": "$.background", "Next": "ReadControl",
            }),
        );
    }

    fn first_analysis_resource(&self) -> String {
        let name = self.strategy.first_analysis();
        self.strategy
            .resources
            .analyses
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strategy(text: &str) -> Strategy {
        let table: toml::Table = toml::from_str(text).unwrap();
        table["strategy"].clone().try_into().unwrap()
    }

    #[test]
    fn the_shipped_canary_is_the_rendering_of_the_shipped_strategy() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
        let s = strategy(&std::fs::read_to_string(dir.join("canary.strategy.toml")).unwrap());
        let shipped: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("canary.asl.json")).unwrap()).unwrap();
        assert_eq!(
            s.compile().unwrap(),
            shipped,
            "render it again: cutover strategy render"
        );
    }

    #[test]
    fn a_strategy_file_is_compiled_again_when_its_text_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.strategy.toml");
        let write = |weight: u32| {
            let text = format!(
                "[strategy]\nsteps = [{{ set_weight = {weight} }}, {{ pause = \"1m\" }}, {{ set_weight = 100 }}]\n"
            );
            std::fs::write(&path, text).unwrap();
        };
        write(20);
        let first = definition_text(&path).unwrap();
        assert_eq!(
            definition_text(&path).unwrap(),
            first,
            "the same text, the same machine"
        );
        write(30);
        let second = definition_text(&path).unwrap();
        assert_ne!(second, first);
        let expected = strategy(&std::fs::read_to_string(&path).unwrap())
            .compile()
            .unwrap();
        assert_eq!(serde_json::from_str::<Value>(&second).unwrap(), expected);
        // A broken file is an error every time, not the last good machine.
        std::fs::write(&path, "[strategy]\nsteps = 3\n").unwrap();
        assert!(definition_text(&path).is_err());
        assert!(definition_text(&path).is_err());
    }

    #[test]
    fn presets_expand_and_the_compiled_machine_is_valid() {
        let linear = strategy("[strategy]\nlinear = { step = 30, interval = \"2m\" }");
        let weights: Vec<u8> = linear
            .expanded()
            .unwrap()
            .iter()
            .filter_map(|s| match s {
                Step::SetWeight { set_weight } => Some(*set_weight),
                _ => None,
            })
            .collect();
        assert_eq!(weights, [30, 60, 90, 100]);
        let def = linear.compile().unwrap();
        cutover_asl::Definition::parse(&def.to_string()).unwrap();
        assert_eq!(def["States"]["Bake30"]["Parameters"]["seconds"], 120);

        let canary = strategy("[strategy]\ncanary = { percent = 5, bake = \"10m\" }");
        let def = canary.compile().unwrap();
        assert_eq!(def["States"]["Shift5"]["Next"], "Observe5");
        assert_eq!(
            def["States"]["Observe5"]["Default"], "Bake5",
            "no observe: straight to the bake"
        );
        assert_eq!(def["States"]["Observe5"]["Choices"][0]["Next"], "ObserveSplit5");
        assert_eq!(
            def["States"]["ObserveSplit5"]["Parameters"]["probe"],
            "observed-split"
        );
        assert_eq!(def["States"]["Observed5"]["Choices"][0]["Next"], "Bake5");
        assert_eq!(def["States"]["Observed5"]["Default"], "Rollback");
        assert_eq!(def["States"]["Healthy5"]["Choices"][0]["Next"], "Gate100");
        cutover_asl::Definition::parse(&def.to_string()).unwrap();
    }

    #[test]
    fn until_promoted_and_several_analyses_compile() {
        let s = strategy(
            "[strategy]\nsteps = [{ set_weight = 20 }, { pause = \"until-promoted\" }, { analysis = [\"health-check\", \"smoke\"] }, { set_weight = 100 }]\n\
             [strategy.resources]\nanalyses = { health-check = \"arn:h\", smoke = \"arn:s\" }",
        );
        let def = s.compile().unwrap();
        assert_eq!(def["States"]["Bake20"]["Parameters"]["seconds"], UNTIL_PROMOTED);
        assert_eq!(def["States"]["Healthy20"]["Choices"][0]["Next"], "Check20-smoke");
        assert_eq!(def["States"]["Check20-smoke"]["Resource"], "arn:s");
        assert_eq!(def["States"]["Healthy20-smoke"]["Choices"][0]["Next"], "Gate100");
        assert_eq!(def["States"]["Observe100"]["Default"], "Done");
        cutover_asl::Definition::parse(&def.to_string()).unwrap();
    }

    #[test]
    fn background_analyses_run_every_so_much_wait_time() {
        let s = strategy(
            "[strategy]\nsteps = [{ set_weight = 10 }, { pause = \"10m\" }, { set_weight = 100 }]\n\
             background = { analysis = [\"health-check\", \"error-rate\"], every = \"1m\" }\n\
             [strategy.resources]\nanalyses = { health-check = \"arn:h\", error-rate = \"arn:e\" }",
        );
        let def = s.compile().unwrap();
        let states = &def["States"];
        assert_eq!(states["Init"]["Choices"][0]["Next"], "BackgroundStart");
        assert_eq!(states["BackgroundStart"]["Next"], "Shift10");
        assert_eq!(states["Count"]["Next"], "BackgroundCount");
        assert_eq!(
            states["BackgroundDue"]["Choices"][0]["NumericGreaterThanEquals"],
            60
        );
        assert_eq!(
            states["BackgroundDue"]["Choices"][0]["Next"],
            "Background-health-check"
        );
        assert_eq!(states["Background-error-rate"]["Resource"], "arn:e");
        assert_eq!(
            states["BackgroundHealthy-health-check"]["Choices"][0]["Next"],
            "Background-error-rate"
        );
        assert_eq!(states["BackgroundHealthy-error-rate"]["Default"], "Rollback");
        assert_eq!(
            states["BackgroundHealthy-error-rate"]["Choices"][0]["Next"],
            "BackgroundReset"
        );
        cutover_asl::Definition::parse(&def.to_string()).unwrap();
        let unknown = strategy(
            "[strategy]\nsteps = [{ set_weight = 100 }]\nbackground = { analysis = \"latency\", every = \"1m\" }",
        );
        let e = unknown.compile().unwrap_err();
        assert_eq!(e.field, "strategy.background.analysis");
    }

    #[test]
    fn bad_strategies_name_the_problem() {
        let err = |text: &str| strategy(text).compile().unwrap_err().to_string();
        assert!(
            err("[strategy]\nsteps = [{ set_weight = 50 }, { set_weight = 10 }]")
                .contains("weights must grow")
        );
        assert!(err("[strategy]\nsteps = [{ set_weight = 50 }]").contains("end at set_weight = 100"));
        assert!(
            err("[strategy]\nsteps = [{ pause = \"1m\" }, { set_weight = 100 }]")
                .contains("start with a set_weight")
        );
        assert!(
            err("[strategy]\nsteps = [{ set_weight = 100 }, { analysis = \"latency\" }]")
                .contains("\"latency\" is not in")
        );
        assert!(
            err("[strategy]\nsteps = [{ set_weight = 100 }, { pause = \"soon\" }]")
                .contains("until-promoted")
        );
        assert!(err("[strategy]\nlinear = { step = 10, interval = \"1m\" }\ncanary = { percent = 10, bake = \"1m\" }").contains("exactly one"));
    }
}
