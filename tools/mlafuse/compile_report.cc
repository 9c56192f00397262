#include "compile_report.h"

#include "cli_json.h"

namespace mlafuse::cli {

std::string compile_report_json(const std::vector<passes::PassStats>& stats,
                                const std::map<std::string, int64_t>& ops_before,
                                const ir::Graph& after, const std::string& source,
                                const std::string& backend, double compile_us) {
  JsonWriter j;
  j.begin_object();
  j.key("source").value(source);
  j.key("backend").value(backend);
  j.key("passes").begin_array();
  for (const auto& s : stats) {
    j.begin_object();
    j.key("name").value(s.pass);
    j.key("ran").value(s.ran);
    j.key("changed").value(s.changed);
    j.key("matches").value(s.matches);
    j.key("patterns").value(s.pattern_matches);
    j.key("rejections").begin_array();
    for (const auto& r : s.rejections) {
      j.begin_object().key("pattern").value(r.pattern).key("node").value(r.node);
      j.key("reason").value(r.reason).end_object();
    }
    j.end_array();
    j.key("nodes_before").value(s.nodes_before);
    j.key("nodes_after").value(s.nodes_after);
    j.key("time_us").value(s.time_us);
    j.end_object();
  }
  j.end_array();
  j.key("ops_before").value(ops_before);
  j.key("ops_after").value(after.op_counts());
  j.key("nodes_after").value(static_cast<int64_t>(after.num_nodes()));
  j.key("compile_us").value(compile_us);
  j.end_object();
  return j.str();
}

}  // namespace mlafuse::cli
