//! The execution order of the steps: file order with each step's `requires` first, and
//! the cycles that leave no order.

use super::*;

/// Orders steps: file order, with each step's `requires` placed before it. Reports cycles
/// (and says whether there was one: the order then breaks it somewhere).
pub(super) fn order_steps(
    cx: &mut Ctx,
    steps: &[Option<Step>],
    index_of: &HashMap<String, usize>,
) -> (Vec<usize>, bool) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut mark = vec![Mark::New; steps.len()];
    let mut order = Vec::with_capacity(steps.len());
    let mut cyclic = false;
    for start in 0..steps.len() {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative depth-first search: (step, next requirement to visit).
        let mut stack = vec![(start, 0usize)];
        mark[start] = Mark::Active;
        while let Some(&mut (i, ref mut next)) = stack.last_mut() {
            let reqs = steps[i]
                .as_ref()
                .map(|s| s.requires.as_slice())
                .unwrap_or(&[]);
            if *next < reqs.len() {
                let r = *next;
                *next += 1;
                // Unknown and self requirements were reported by `validate_step`.
                let Some(&j) = index_of.get(&reqs[r]).filter(|&&j| j != i) else {
                    continue;
                };
                match mark[j] {
                    Mark::New => {
                        mark[j] = Mark::Active;
                        stack.push((j, 0));
                    }
                    Mark::Active => {
                        let from = stack.iter().position(|&(s, _)| s == j).unwrap_or(0);
                        let id = |s: usize| steps[s].as_ref().map(|s| s.id.as_str()).unwrap_or("?");
                        let mut names: Vec<&str> =
                            stack[from..].iter().map(|&(s, _)| id(s)).collect();
                        names.push(id(j));
                        let path = FieldPath::root()
                            .key("steps")
                            .index(i)
                            .key("requires")
                            .index(r);
                        cx.error(path, format!("dependency cycle: {}", names.join(" → ")));
                        cyclic = true;
                    }
                    Mark::Done => {}
                }
            } else {
                mark[i] = Mark::Done;
                order.push(i);
                stack.pop();
            }
        }
    }
    (order, cyclic)
}
