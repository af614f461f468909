//! `iapeer queue`: the tasks waiting for busy peers (DESIGN §13), in the
//! order they will be delivered; `iapeer queue rm NAME TASK` takes one out.

use crate::cli::{QueueAction, QueueArgs};
use crate::cmd::App;
use crate::core::error::{Error, Result};
use crate::core::identity::Identity;
use crate::store::queue::Queues;

pub(crate) fn run(app: &App, args: QueueArgs) -> Result<i32> {
    let queues = Queues::new(&app.config.paths.state);
    if let Some(QueueAction::Rm(rm)) = args.action {
        let id = Identity::parse(&rm.name)?;
        let plain = !rm.task.is_empty()
            && !rm.task.starts_with('.')
            && rm
                .task
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !plain {
            return Err(Error::input(
                format!("task {:?}", rm.task),
                "it is not a task's name",
                format!("use a name `iapeer queue {id}` shows"),
            ));
        }
        let task = rm.task.strip_suffix(".task").unwrap_or(&rm.task);
        if !queues.remove(&id, task)? {
            return Err(Error::input(
                format!("task {task} of {id}"),
                "no such task waits",
                format!("see what waits with `iapeer queue {id}`"),
            ));
        }
        println!("{id}: task {task} removed from the queue");
        return Ok(0);
    }
    let ids = match &args.name {
        Some(name) => vec![Identity::parse(name)?],
        None => queues.peers(),
    };
    let mut docs = Vec::new();
    let mut rows = Vec::new();
    for id in &ids {
        let mut tasks = Vec::new();
        for (place, t) in queues.list(id).into_iter().enumerate() {
            match t {
                Ok(t) => {
                    let first = t.text.lines().next().unwrap_or("");
                    let shown: String = first.chars().take(60).collect();
                    rows.push(format!(
                        "{id}\t{}\t{}\t{}{}{}",
                        place + 1,
                        t.name,
                        if t.delivering { "[delivering] " } else { "" },
                        t.topic
                            .as_deref()
                            .map(|t| format!("[{t}] "))
                            .unwrap_or_default(),
                        shown
                    ));
                    tasks.push(serde_json::json!({
                        "task": t.name, "topic": t.topic, "text": t.text, "delivering": t.delivering,
                    }));
                }
                Err(e) => {
                    rows.push(format!("{id}\t{}\t!\t{e}", place + 1));
                    tasks.push(serde_json::json!({ "error": e.to_string() }));
                }
            }
        }
        if !tasks.is_empty() || args.name.is_some() {
            docs.push(serde_json::json!({ "name": id.as_str(), "tasks": tasks }));
        }
    }
    if args.json {
        println!("{}", serde_json::json!({ "schema": 1, "queues": docs }));
    } else if rows.is_empty() {
        println!("no task waits");
    } else {
        println!("PEER\t#\tTASK\tTEXT");
        for r in rows {
            println!("{r}");
        }
    }
    Ok(0)
}
