// A non-owning reference to a callable, as std::function_ref (C++26) and
// llvm::function_ref: valid while the callable lives (a lambda passed as an
// argument lives until the call returns). Unlike std::function it never
// allocates, so a forward pass makes no heap allocation in its steady state.
#pragma once

#include <type_traits>
#include <utility>

namespace sparsenet {

template <typename Signature>
class FunctionRef;

template <typename R, typename... Args>
class FunctionRef<R(Args...)> {
 public:
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, FunctionRef>>>
  FunctionRef(const F& fn)  // NOLINT(google-explicit-constructor): lambdas convert implicitly
      : object_(&fn), call_([](const void* object, Args... args) -> R {
          return (*static_cast<const F*>(object))(std::forward<Args>(args)...);
        }) {}
  R operator()(Args... args) const { return call_(object_, std::forward<Args>(args)...); }

 private:
  const void* object_;
  R (*call_)(const void*, Args...);
};

}  // namespace sparsenet
