// The sortable table of the largest predicted-vs-measured differences.
#pragma once
#include <QAbstractTableModel>

#include <memory>

#include "gui/compare_model.hpp"

namespace ditwin::gui {

class CompareTableModel : public QAbstractTableModel {
  Q_OBJECT

 public:
  enum Column { op, rank, predicted, measured, difference, error, column_count };
  static constexpr int sort_role = Qt::UserRole;  // numbers for numeric columns
  static constexpr std::size_t max_rows = 2000;   // the largest |difference| first

  explicit CompareTableModel(QObject* parent = nullptr) : QAbstractTableModel(parent) {}
  void set_comparison(std::shared_ptr<const Comparison> c);
  const OpDiff* diff_at(int row) const;

  int rowCount(const QModelIndex& parent = {}) const override;
  int columnCount(const QModelIndex& parent = {}) const override;
  QVariant data(const QModelIndex& index, int role) const override;
  QVariant headerData(int section, Qt::Orientation orientation, int role) const override;

 private:
  std::shared_ptr<const Comparison> comparison_;
};

}  // namespace ditwin::gui
