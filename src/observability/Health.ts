/**
 * What this process runs and whether each part is ready. Every process, whatever its roles, has
 * one: each role marks itself ready once it is built (with an optional probe, e.g. "the store
 * answers") and not ready when its shutdown begins, so a load balancer drains the node before its
 * listeners close. A supervised process also holds the supervisor's last report of its siblings.
 */
import { Context, Duration, Effect, Layer } from "effect"

/** The tiers a process can run; `sluice --role` takes any of them. */
export const ROLES = ["ingress", "processor", "serving"] as const
export type Role = (typeof ROLES)[number]

/** One role's readiness: `reason` says why it is not ready. */
export interface RoleState {
  readonly ready: boolean
  readonly reason?: string | undefined
}

/** A supervised child as its supervisor last saw it. */
export interface ChildState {
  readonly name: string
  readonly roles: ReadonlyArray<Role>
  readonly pid: number | null
  readonly state: "starting" | "running" | "restarting" | "stopping" | "stopped"
  readonly restarts: number
  readonly lastExit: string | null
}

export interface HealthApi {
  /** The roles this process runs, in start order. */
  readonly roles: ReadonlyArray<Role>
  /** Marks a role ready (probed with `probe` at every readiness check) or not ready with a reason. */
  readonly set: (role: Role, state: RoleState, probe?: Effect.Effect<void, string>) => Effect.Effect<void>
  /** Every role's state now, its probe run (bounded by `probeTimeout`). */
  readonly check: Effect.Effect<Readonly<Record<string, RoleState>>>
  /** The supervisor's last report of its children (a process started by `npm start`), if any. */
  readonly supervisor: () => ReadonlyArray<ChildState> | undefined
  readonly setSupervisor: (children: ReadonlyArray<ChildState>) => void
}

export class Health extends Context.Tag("sluice/observability/Health")<Health, HealthApi>() {}

/** How long a role's probe may take before the role counts as not ready. */
const probeTimeout = Duration.seconds(2)

export const make = (roles: ReadonlyArray<Role>): HealthApi => {
  const states = new Map<Role, { state: RoleState; probe: Effect.Effect<void, string> | undefined }>(
    roles.map((role) => [role, { state: { ready: false, reason: "starting" }, probe: undefined }]),
  )
  let children: ReadonlyArray<ChildState> | undefined
  const checkOne = (role: Role): Effect.Effect<RoleState> => {
    const entry = states.get(role)!
    if (!entry.state.ready || entry.probe === undefined) return Effect.succeed(entry.state)
    return entry.probe.pipe(
      Effect.timeoutFail({ duration: probeTimeout, onTimeout: () => "probe did not answer within 2 s" }),
      Effect.as<RoleState>({ ready: true }),
      Effect.catchAll((reason) => Effect.succeed<RoleState>({ ready: false, reason })),
    )
  }
  return {
    roles,
    set: (role, state, probe) => Effect.sync(() => void states.set(role, { state, probe })),
    check: Effect.map(
      Effect.forEach(roles, (role) => Effect.map(checkOne(role), (state) => [role, state] as const), {
        concurrency: "unbounded",
      }),
      Object.fromEntries,
    ),
    supervisor: () => children,
    setSupervisor: (report) => {
      children = report
    },
  }
}

/** The process's health for these roles (all start not ready). */
export const layer = (roles: ReadonlyArray<Role>) => Layer.sync(Health, () => make(roles))

/**
 * Marks `role` ready when built and "shutting down" when released. Built last in a role's
 * composition and released first, it brackets exactly the time the role is up.
 */
export const readyWhileAlive = (role: Role, probe?: Effect.Effect<void, string>) =>
  Layer.scopedDiscard(
    Effect.flatMap(Health, (health) =>
      Effect.acquireRelease(health.set(role, { ready: true }, probe), () =>
        health.set(role, { ready: false, reason: "shutting down" }),
      ),
    ),
  )

/** Every role ready from the start, without probes (tests). */
export const layerReady = (roles: ReadonlyArray<Role>) =>
  Layer.effect(
    Health,
    Effect.sync(() => make(roles)).pipe(
      Effect.tap((health) => Effect.forEach(roles, (role) => health.set(role, { ready: true }))),
    ),
  )
