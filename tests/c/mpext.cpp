// mpext.cpp - a small C++ extension module (pybind11) for the native stack
// tests: mpext.Holder().grow(n) allocates n bytes with new char[n] inside
// mpext::Holder::grow and keeps them as long as the Holder lives. The
// Holder's own array is reserved when it is made, so grow() allocates only
// its block.
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <vector>

#include <pybind11/pybind11.h>

namespace mpext {

class Holder {
public:
    Holder() { blocks_.reserve(capacity); }
    std::size_t grow(int n);
    std::size_t size() const { return blocks_.size(); }

private:
    static constexpr std::size_t capacity = 64;
    std::vector<std::unique_ptr<char[]>> blocks_;
};

// Not inlined into pybind11's dispatcher: the tests look for this frame.
__attribute__((noinline)) std::size_t Holder::grow(int n)
{
    if (n <= 0 || blocks_.size() == capacity)
        throw std::length_error("mpext.Holder.grow: n must be positive and the Holder not full");
    char *block = new char[static_cast<std::size_t>(n)]; // GROW-LINE
    block[0] = 1;
    blocks_.emplace_back(block);
    return blocks_.size();
}

} // namespace mpext

PYBIND11_MODULE(mpext, m)
{
    pybind11::class_<mpext::Holder>(m, "Holder")
        .def(pybind11::init<>())
        .def("grow", &mpext::Holder::grow)
        .def("__len__", &mpext::Holder::size);
}
