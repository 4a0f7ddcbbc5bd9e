#include "io/embeddings_hdf5.h"
#include "io/hdf5_util.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "io/atomic_file.h"
#include "runtime/error.h"

namespace elmo {

static_assert(sizeof(hid_t) == sizeof(int64_t), "hid_t is stored as int64_t in the header");

namespace {

constexpr const char* kIndexDataset = "sentence_to_index";



H5Id utf8_string_type() {
  H5Id type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  return type;
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

herr_t collect_name(hid_t, const char* name, const H5L_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->push_back(name);
  return 0;
}

std::string read_string_dataset(hid_t file, const std::string& path, const char* name) {
  H5Id ds(H5Dopen2(file, name, H5P_DEFAULT), H5Dclose);
  H5Id ftype(ds.ok() ? H5Dget_type(ds.get()) : -1, H5Tclose);
  H5Id space(ds.ok() ? H5Dget_space(ds.get()) : -1, H5Sclose);
  if (!ftype.ok() || H5Tget_class(ftype.get()) != H5T_STRING ||
      H5Sget_simple_extent_npoints(space.get()) != 1)
    throw Error(str(path, ": dataset '", name, "' is not a single string"));
  if (H5Tis_variable_str(ftype.get()) > 0) {
    H5Id mtype(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mtype.get(), H5T_VARIABLE);
    H5Tset_cset(mtype.get(), H5Tget_cset(ftype.get()));
    char* text = nullptr;
    if (H5Dread(ds.get(), mtype.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, &text) < 0)
      throw Error(str(path, ": cannot read dataset '", name, "'"));
    std::string out = text ? text : "";
    H5free_memory(text);
    return out;
  }
  const size_t size = H5Tget_size(ftype.get());
  std::string out(size, '\0');
  if (H5Dread(ds.get(), ftype.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
    throw Error(str(path, ": cannot read dataset '", name, "'"));
  out.resize(std::min(out.size(), out.find('\0')));
  return out;
}

}  // namespace

EmbeddingsHdf5Writer::EmbeddingsHdf5Writer(const std::string& path)
    : path_(path), tmp_path_(str(path, ".tmp-", ::getpid())) {
  silence_hdf5();
  file_ = H5Fcreate(tmp_path_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (file_ < 0)
    throw Error(str(path, ": cannot create the embeddings file (does its folder exist and is it "
                          "writable?)"));
}

EmbeddingsHdf5Writer::~EmbeddingsHdf5Writer() {
  if (file_ >= 0) {
    H5Fclose(file_);
    ::unlink(tmp_path_.c_str());
  }
}

void EmbeddingsHdf5Writer::add(const std::string& sentence_text, const Tensor& embeddings) {
  ELMO_CHECK(file_ >= 0, path_, ": add() after close()");
  ELMO_CHECK(embeddings.dtype() == DType::kF32 && (embeddings.ndim() == 2 || embeddings.ndim() == 3),
             path_, ": sentence embeddings must be f32 [L, n, 2P] or [n, 2P], got ",
             embeddings.describe());
  const Tensor host = embeddings.device().is_cpu() ? embeddings : embeddings.to(Device::cpu());
  const std::string name = std::to_string(count_);
  std::vector<hsize_t> dims;
  for (int64_t d : host.shape().vec()) dims.push_back(static_cast<hsize_t>(d));
  H5Id space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  H5Id ds(H5Dcreate2(file_, name.c_str(), H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT,
                     H5P_DEFAULT),
          H5Dclose);
  if (!ds.ok() || (host.numel() > 0 && H5Dwrite(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL,
                                                H5P_DEFAULT, host.raw()) < 0))
    throw Error(str(tmp_path_, ": cannot write dataset '", name, "' (disk full?)"));
  sentence_to_index_[sentence_text] = name;
  ++count_;
}

void EmbeddingsHdf5Writer::close() {
  if (file_ < 0) return;
  try {
    // Like Python's json.dumps: non-ASCII escaped; invalid UTF-8 replaced rather than fatal.
    const std::string index =
        sentence_to_index_.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
    const char* text = index.c_str();
    H5Id type = utf8_string_type();
    const hsize_t one = 1;
    H5Id space(H5Screate_simple(1, &one, nullptr), H5Sclose);
    H5Id ds(H5Dcreate2(file_, kIndexDataset, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT,
                       H5P_DEFAULT),
            H5Dclose);
    if (!ds.ok() || H5Dwrite(ds.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, &text) < 0)
      throw Error(str(tmp_path_, ": cannot write dataset '", kIndexDataset, "'"));
  } catch (...) {
    H5Fclose(file_);
    file_ = -1;
    ::unlink(tmp_path_.c_str());
    throw;
  }
  const herr_t closed = H5Fclose(file_);
  file_ = -1;
  const int fd = ::open(tmp_path_.c_str(), O_RDONLY | O_CLOEXEC);
  const bool synced = fd >= 0 && ::fsync(fd) == 0;
  if (fd >= 0) ::close(fd);
  if (closed < 0 || !synced || ::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    ::unlink(tmp_path_.c_str());
    throw Error(str(path_, ": cannot finish the embeddings file (disk full?)"));
  }
  fsync_directory(std::filesystem::path(path_).parent_path().string());
}

EmbeddingsHdf5 read_embeddings_hdf5(const std::string& path) {
  silence_hdf5();
  if (!std::filesystem::exists(path)) throw Error(str(path, ": no such file"));
  H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!file.ok()) throw Error(str(path, ": not an HDF5 file (or it cannot be read)"));
  std::vector<std::string> names;
  hsize_t idx = 0;
  if (H5Literate(file.get(), H5_INDEX_NAME, H5_ITER_INC, &idx, collect_name, &names) < 0)
    throw Error(str(path, ": cannot list datasets"));
  EmbeddingsHdf5 out;
  std::vector<int64_t> indices;
  for (const auto& n : names) {
    if (n == kIndexDataset) {
      const std::string text = read_string_dataset(file.get(), path, kIndexDataset);
      try {
        out.sentence_to_index = nlohmann::json::parse(text);
      } catch (const nlohmann::json::exception& e) {
        throw Error(str(path, ": dataset '", kIndexDataset, "' is not JSON (", e.what(), ")"));
      }
    } else if (all_digits(n) && n.size() < 12) {
      indices.push_back(std::stoll(n));
    }
  }
  std::sort(indices.begin(), indices.end());
  for (size_t i = 0; i < indices.size(); ++i) {
    if (indices[i] != static_cast<int64_t>(i))
      throw Error(str(path, ": sentence datasets are not numbered 0..", indices.size() - 1,
                      " (dataset '", i, "' is missing)"));
    const std::string name = std::to_string(i);
    H5Id ds(H5Dopen2(file.get(), name.c_str(), H5P_DEFAULT), H5Dclose);
    H5Id space(ds.ok() ? H5Dget_space(ds.get()) : -1, H5Sclose);
    const int ndims = space.ok() ? H5Sget_simple_extent_ndims(space.get()) : -1;
    if (ndims < 1 || ndims > Shape::kMaxDims)
      throw Error(str(path, ": dataset '", name, "' is not a float array of 1 to 4 dims"));
    hsize_t dims[Shape::kMaxDims];
    H5Sget_simple_extent_dims(space.get(), dims, nullptr);
    Tensor t = Tensor::empty(Shape(std::vector<int64_t>(dims, dims + ndims)));
    if (t.numel() > 0 &&
        H5Dread(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw()) < 0)
      throw Error(str(path, ": cannot read dataset '", name, "'"));
    out.sentences.push_back(std::move(t));
  }
  return out;
}

}  // namespace elmo
