//! Where the pipeline view draws each Warehouse and Stage: a layered drawing, left to right,
//! made on the server so that a browser showing 1,000 Stages only places boxes.
//!
//! Nodes are given with their upstream nodes (a Stage's Warehouses and upstream Stages). Each
//! goes in the column after its furthest upstream node (the longest path from a node with
//! none). Within a column, nodes are ordered by the mean position of their neighbours in the
//! column before (then after) it, a few sweeps each way (the barycenter heuristic of
//! Sugiyama-style layouts), which keeps edges short and mostly uncrossed. Then each node takes
//! the row of its upstream nodes' mean, pushed down past the node above it, so a chain stays on
//! one row and a Stage fed by 100 Warehouses sits beside their middle.
//!
//! Kargo's pipelines are acyclic (admission refuses a cycle); a cycle that slips in anyway
//! (a Stage whose upstream Stage does not exist yet, say) still gets a place: its nodes go after
//! everything placed before them.

/// Where one node goes: its column, and its row (fractional: a node may sit between rows).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Place {
    pub column: usize,
    pub row: f64,
}

/// Sweeps of the ordering heuristic each way; a few settle a pipeline's order.
const SWEEPS: usize = 4;

/// Places the nodes whose upstream nodes are `upstream` (by index; out-of-range and
/// self-references are ignored). The result is in the order of `upstream`.
pub fn layered(upstream: &[Vec<usize>]) -> Vec<Place> {
    let n = upstream.len();
    let inputs: Vec<Vec<usize>> = upstream
        .iter()
        .enumerate()
        .map(|(i, ups)| {
            let mut ups: Vec<usize> = ups.iter().copied().filter(|&u| u < n && u != i).collect();
            ups.sort_unstable();
            ups.dedup();
            ups
        })
        .collect();
    let mut outputs = vec![Vec::new(); n];
    for (i, ups) in inputs.iter().enumerate() {
        for &u in ups {
            outputs[u].push(i);
        }
    }
    let columns = columns(&inputs, &outputs);
    let width = columns.iter().max().map_or(0, |c| c + 1);

    // Each column's nodes, in the order given.
    let mut order: Vec<Vec<usize>> = vec![Vec::new(); width];
    for (i, &c) in columns.iter().enumerate() {
        order[c].push(i);
    }
    let mut position = vec![0.0; n];
    let number = |order: &[Vec<usize>], position: &mut [f64]| {
        for column in order {
            for (at, &i) in column.iter().enumerate() {
                position[i] = at as f64;
            }
        }
    };
    number(&order, &mut position);
    for _ in 0..SWEEPS {
        for column in order.iter_mut().skip(1) {
            sort_by_neighbours(column, &inputs, &mut position);
        }
        for column in order.iter_mut().rev().skip(1) {
            sort_by_neighbours(column, &outputs, &mut position);
        }
    }

    // Rows: the first column in its order; each later node at its inputs' mean row, below the
    // node above it.
    let mut row = vec![0.0; n];
    for (c, column) in order.iter().enumerate() {
        let mut next = 0.0f64;
        for &i in column {
            let wanted = if c == 0 {
                next
            } else {
                mean(inputs[i].iter().map(|&u| row[u])).unwrap_or(next)
            };
            row[i] = wanted.max(next);
            next = row[i] + 1.0;
        }
    }
    (0..n)
        .map(|i| Place {
            column: columns[i],
            row: row[i],
        })
        .collect()
}

/// Each node's column: one after its furthest input's. Kahn's order; whatever a cycle keeps
/// out of it goes after the nodes placed.
fn columns(inputs: &[Vec<usize>], outputs: &[Vec<usize>]) -> Vec<usize> {
    let n = inputs.len();
    let mut waiting: Vec<usize> = inputs.iter().map(Vec::len).collect();
    let mut column = vec![0usize; n];
    let mut placed = vec![false; n];
    let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    while let Some(i) = ready.pop() {
        placed[i] = true;
        for &o in &outputs[i] {
            column[o] = column[o].max(column[i] + 1);
            waiting[o] -= 1;
            if waiting[o] == 0 {
                ready.push(o);
            }
        }
    }
    let after = column
        .iter()
        .zip(&placed)
        .filter(|(_, p)| **p)
        .map(|(c, _)| c + 1)
        .max()
        .unwrap_or(0);
    for i in 0..n {
        if !placed[i] {
            column[i] = after;
        }
    }
    column
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, count) = values.fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
    (count > 0).then(|| sum / count as f64)
}

/// Orders `column` by the mean position of each node's `neighbours` (a node with none keeps
/// its place), then numbers it again.
fn sort_by_neighbours(column: &mut [usize], neighbours: &[Vec<usize>], position: &mut [f64]) {
    let mut keyed: Vec<(f64, usize)> = column
        .iter()
        .map(|&i| {
            let key = mean(neighbours[i].iter().map(|&u| position[u])).unwrap_or(position[i]);
            (key, i)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (at, (_, i)) in keyed.into_iter().enumerate() {
        column[at] = i;
        position[i] = at as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(places: &[Place]) -> Vec<(usize, f64)> {
        places.iter().map(|p| (p.column, p.row)).collect()
    }

    #[test]
    fn a_chain_stays_on_one_row() {
        // warehouse → dev → staging → prod
        let places = layered(&[vec![], vec![0], vec![1], vec![2]]);
        assert_eq!(at(&places), [(0, 0.0), (1, 0.0), (2, 0.0), (3, 0.0)]);
    }

    #[test]
    fn a_stage_goes_after_its_furthest_upstream() {
        // w → a → b, and c takes from both w and b: c is after b.
        let places = layered(&[vec![], vec![0], vec![1], vec![0, 2]]);
        assert_eq!(places[3].column, 3);
    }

    #[test]
    fn a_stage_fed_by_many_warehouses_sits_beside_their_middle() {
        let mut upstream: Vec<Vec<usize>> = vec![vec![]; 100];
        upstream.push((0..100).collect());
        let places = layered(&upstream);
        assert_eq!(places[100].column, 1);
        assert_eq!(places[100].row, 49.5);
    }

    #[test]
    fn crossing_edges_are_untangled() {
        // Warehouses w0, w1; Stages s0 (from w1) and s1 (from w0), given crossed.
        let places = layered(&[vec![], vec![], vec![1], vec![0]]);
        let (w0, w1, s0, s1) = (places[0], places[1], places[2], places[3]);
        assert_eq!(w0.row < w1.row, s1.row < s0.row, "edges cross: {places:?}");
        // No two nodes of a column share a row.
        assert_ne!(s0.row, s1.row);
    }

    #[test]
    fn fan_out_keeps_every_node_on_its_own_row() {
        // One Stage feeding 5 Stages: they take rows 0..5 in the next column.
        let mut upstream = vec![vec![], vec![0]];
        upstream.extend((0..5).map(|_| vec![1]));
        let places = layered(&upstream);
        let mut rows: Vec<f64> = places[2..].iter().map(|p| p.row).collect();
        rows.sort_by(f64::total_cmp);
        assert_eq!(rows, [0.0, 1.0, 2.0, 3.0, 4.0]);
        assert!(places[2..].iter().all(|p| p.column == 2));
    }

    #[test]
    fn a_cycle_and_bad_references_still_get_places() {
        // 1 and 2 name each other; 3 names itself and a node that does not exist.
        let places = layered(&[vec![], vec![2, 0], vec![1], vec![3, 99]]);
        assert_eq!(places.len(), 4);
        assert_eq!(places[0].column, 0);
        assert_eq!(places[3].column, 0, "no real upstream: first column");
        assert!(places[1].column >= 1 && places[2].column >= 1);
    }

    #[test]
    fn nothing_in_nothing_out() {
        assert!(layered(&[]).is_empty());
    }
}
