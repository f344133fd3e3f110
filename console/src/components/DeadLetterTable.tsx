/** Dead letters as a table: when, which device, why, and the payload as it was received. */
import { dateTime } from "../format"
import { Link } from "../router"
import type { DeadLetter } from "../types"

export const DeadLetterTable = (props: { rows: ReadonlyArray<DeadLetter>; showDevice: boolean }) =>
  props.rows.length === 0 ? (
    <p class="muted">No dead letters.</p>
  ) : (
    <div class="table-wrap">
      <table data-testid="dead-letters">
        <thead>
          <tr>
            <th scope="col">Received</th>
            {props.showDevice && <th scope="col">Device</th>}
            <th scope="col">Reason</th>
            <th scope="col">Raw payload</th>
          </tr>
        </thead>
        <tbody>
          {props.rows.map((d) => (
            <tr key={`${d.shardId}/${d.sequenceNumber}`}>
              <td>{dateTime(d.receivedAt)}</td>
              {props.showDevice && (
                <td>
                  <Link href={`/devices/${encodeURIComponent(d.deviceId)}`}>{d.deviceId}</Link>
                </td>
              )}
              <td class="reason">{d.reason}</td>
              <td>
                <details>
                  <summary>{d.raw.length > 40 ? `${d.raw.slice(0, 40)}…` : d.raw || "(empty)"}</summary>
                  <pre>{d.raw}</pre>
                  <p class="muted">
                    Stream position: shard {d.shardId}, sequence {d.sequenceNumber}
                  </p>
                </details>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  )
