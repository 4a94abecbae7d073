// The Pareto plot of a search report, painted on a QImage (no window, no display).
#include "search/pareto_png.hpp"

#include <QtGui/QGuiApplication>
#include <QtGui/QImage>
#include <QtGui/QPainter>

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <vector>

#include "model/errors.hpp"

namespace ditwin::search {

namespace {

struct Point {
  double x, y;
  bool best;
};

// A tick label with as many decimals as ticks `step` apart need.
QString number(double v, double step) {
  double a = std::abs(v), scale = 1;
  QString unit;
  if (a >= 1e9) scale = 1e9, unit = "G";
  else if (a >= 1e6) scale = 1e6, unit = "M";
  else if (a >= 1e3) scale = 1e3, unit = "k";
  double s = step / scale;
  int decimals = s > 0 ? std::clamp(static_cast<int>(std::ceil(-std::log10(s))) + 1, 0, 6) : 2;
  return QString::number(v / scale, 'f', decimals) + unit;
}

// One scatter panel in `area`: points, the front joined in x order, the best ringed.
void panel(QPainter& p, const QRectF& area, std::vector<Point> pts, const QString& title, const QString& xlabel,
           const QString& ylabel) {
  p.setPen(Qt::black);
  p.drawText(QRectF(area.left(), area.top() - 28, area.width(), 20), Qt::AlignHCenter, title);
  p.drawRect(area);
  if (pts.empty()) {
    p.drawText(area, Qt::AlignCenter, "no feasible layout");
    return;
  }
  double x0 = pts[0].x, x1 = x0, y0 = pts[0].y, y1 = y0;
  for (const auto& q : pts) {
    x0 = std::min(x0, q.x), x1 = std::max(x1, q.x);
    y0 = std::min(y0, q.y), y1 = std::max(y1, q.y);
  }
  double dx = x1 - x0, dy = y1 - y0;
  if (dx <= 0) dx = std::max(std::abs(x0) * 0.1, 1e-9);
  if (dy <= 0) dy = std::max(std::abs(y0) * 0.1, 1e-9);
  x0 -= 0.05 * dx, x1 += 0.05 * dx, y0 -= 0.05 * dy, y1 += 0.05 * dy;
  auto at = [&](const Point& q) {
    return QPointF(area.left() + (q.x - x0) / (x1 - x0) * area.width(), area.bottom() - (q.y - y0) / (y1 - y0) * area.height());
  };
  for (int i = 0; i <= 4; ++i) {
    double fx = x0 + (x1 - x0) * i / 4, fy = y0 + (y1 - y0) * i / 4;
    double px = area.left() + area.width() * i / 4, py = area.bottom() - area.height() * i / 4;
    p.setPen(QColor(220, 220, 220));
    p.drawLine(QPointF(px, area.top()), QPointF(px, area.bottom()));
    p.drawLine(QPointF(area.left(), py), QPointF(area.right(), py));
    p.setPen(Qt::black);
    p.drawText(QRectF(px - 40, area.bottom() + 4, 80, 16), Qt::AlignHCenter, number(fx, (x1 - x0) / 4));
    p.drawText(QRectF(area.left() - 64, py - 8, 58, 16), Qt::AlignRight | Qt::AlignVCenter, number(fy, (y1 - y0) / 4));
  }
  p.drawText(QRectF(area.left(), area.bottom() + 22, area.width(), 18), Qt::AlignHCenter, xlabel);
  p.save();
  p.translate(area.left() - 70, area.center().y());
  p.rotate(-90);
  p.drawText(QRectF(-area.height() / 2, -18, area.height(), 18), Qt::AlignHCenter, ylabel);
  p.restore();
  std::sort(pts.begin(), pts.end(), [](const Point& a, const Point& b) { return a.x < b.x; });
  std::vector<Point> front;
  for (const auto& q : pts)
    if (!q.best) front.push_back(q);
  p.setPen(QPen(QColor(70, 110, 200), 1.5));
  for (std::size_t i = 1; i < front.size(); ++i) p.drawLine(at(front[i - 1]), at(front[i]));
  p.setBrush(QColor(70, 110, 200));
  for (const auto& q : front) p.drawEllipse(at(q), 4, 4);
  p.setBrush(Qt::NoBrush);
  p.setPen(QPen(QColor(210, 50, 40), 2.5));
  for (const auto& q : pts)
    if (q.best) p.drawEllipse(at(q), 9, 9);
}

}  // namespace

void write_pareto_png(const nlohmann::json& report, const std::string& path) {
  // Fonts need a QGuiApplication; the offscreen platform needs no display.
  std::unique_ptr<QGuiApplication> app;
  if (!QGuiApplication::instance()) {
    if (std::getenv("QT_QPA_PLATFORM") == nullptr) setenv("QT_QPA_PLATFORM", "offscreen", 1);
    // Qt's notes about a missing XDG_RUNTIME_DIR concern apps with windows, not a PNG.
    qInstallMessageHandler([](QtMsgType type, const QMessageLogContext&, const QString& msg) {
      if (type != QtDebugMsg && type != QtInfoMsg && !msg.contains("XDG_RUNTIME_DIR")) std::fprintf(stderr, "%s\n", qPrintable(msg));
    });
    static int argc = 1;
    static char name[] = "ditwin";
    static char* argv[] = {name, nullptr};
    app = std::make_unique<QGuiApplication>(argc, argv);
  }
  const auto& pareto = report["pareto"];
  bool second = pareto.contains("mfu_vs_ettr");
  QImage image(second ? 1500 : 820, 600, QImage::Format_ARGB32);
  image.fill(Qt::white);
  QPainter p(&image);
  p.setRenderHint(QPainter::Antialiasing);
  // The front, and the simulated best at its analytic figures (it may lie just under the front).
  const double gib = 1024.0 * 1024 * 1024;
  std::vector<Point> a;
  for (const auto& q : pareto["throughput_vs_memory"])
    a.push_back({q["memory_per_gpu_bytes"].get<double>() / gib, q["tokens_per_s"].get<double>(), false});
  if (!report["top"].empty()) {
    const auto& t = report["top"][0];
    a.push_back({t["memory_per_gpu_bytes"].get<double>() / gib, t["analytic"]["tokens_per_s"].get<double>(), true});
  }
  QString head = QString::fromStdString(report["plan"].get<std::string>()) + " on " + QString::number(report["gpus"].get<long long>()) +
                 " GPUs: analytic tier, the layouts no other beats on both axes (ringed: the best after SimGrid)";
  p.drawText(QRectF(0, 8, image.width(), 20), Qt::AlignHCenter, head);
  panel(p, QRectF(100, 80, 680, 440), a, "throughput vs memory per GPU", "memory per GPU (GiB)", "tokens/s");
  if (second) {
    std::vector<Point> b;
    for (const auto& q : pareto["mfu_vs_ettr"]) b.push_back({100 * q["ettr"].get<double>(), 100 * q["mfu"].get<double>(), false});
    if (!report["top"].empty()) {
      const auto& t = report["top"][0];
      double ettr = t.contains("ettr_analytic") ? t["ettr_analytic"].get<double>() : t["ettr"].get<double>();
      b.push_back({100 * ettr, 100 * t["analytic"]["mfu"].get<double>(), true});
    }
    panel(p, QRectF(880, 80, 580, 440), b, "MFU vs ETTR", "ETTR (%)", "MFU (%)");
  }
  p.end();
  if (!image.save(QString::fromStdString(path), "PNG")) throw InputError(path + ": cannot write the PNG");
}

}  // namespace ditwin::search
