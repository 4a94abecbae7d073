// Table model over Comparison::diffs.
#include "gui/compare_table.hpp"

#include <QBrush>

#include <cmath>

#include "gui/timeline_widget.hpp"

namespace ditwin::gui {

void CompareTableModel::set_comparison(std::shared_ptr<const Comparison> c) {
  beginResetModel();
  comparison_ = std::move(c);
  endResetModel();
}

const OpDiff* CompareTableModel::diff_at(int row) const {
  if (!comparison_ || row < 0 || row >= rowCount()) return nullptr;
  return &comparison_->diffs[static_cast<std::size_t>(row)];
}

int CompareTableModel::rowCount(const QModelIndex& parent) const {
  if (parent.isValid() || !comparison_) return 0;
  return static_cast<int>(std::min(comparison_->diffs.size(), max_rows));
}

int CompareTableModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : column_count; }

QVariant CompareTableModel::headerData(int section, Qt::Orientation o, int role) const {
  if (o != Qt::Horizontal || role != Qt::DisplayRole) return {};
  switch (section) {
    case op: return "op";
    case rank: return "rank";
    case predicted: return "predicted";
    case measured: return "measured";
    case difference: return "difference";
    case error: return "error";
    default: return {};
  }
}

QVariant CompareTableModel::data(const QModelIndex& index, int role) const {
  const OpDiff* d = diff_at(index.row());
  if (!d) return {};
  double e = d->error();
  if (role == sort_role) {
    switch (index.column()) {
      case op: return QString::fromStdString(d->name);
      case rank: return d->rank;
      case predicted: return d->predicted_s;
      case measured: return d->measured_s;
      case difference: return std::fabs(d->diff_s());
      case error: return std::isfinite(e) ? std::fabs(e) : 1e300;
      default: return {};
    }
  }
  if (role == Qt::DisplayRole) {
    switch (index.column()) {
      case op: return QString::fromStdString(d->name);
      case rank: return d->rank;
      case predicted: return format_time(d->predicted_s);
      case measured: return format_time(d->measured_s);
      case difference: return (d->diff_s() >= 0 ? "+" : "-") + format_time(std::fabs(d->diff_s()));
      case error: return std::isfinite(e) ? QString("%1%2%").arg(e >= 0 ? "+" : "").arg(100 * e, 0, 'f', 1) : QString("n/a");
      default: return {};
    }
  }
  if (role == Qt::BackgroundRole && index.column() == error) return QBrush(TimelineWidget::error_colour(e));
  if (role == Qt::TextAlignmentRole && index.column() != op) return int(Qt::AlignRight | Qt::AlignVCenter);
  return {};
}

}  // namespace ditwin::gui
